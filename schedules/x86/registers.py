"""Where a CPU kernel's per-tile scratch lives: the storage scope that lets LLVM keep it in registers.

A tile's accumulators (a convolution's ``oc_blocks x columns`` vectors, a Winograd transform's rows)
are a small buffer allocated inside the parallel task loop. TVM's ``LowerTVMBuiltin`` turns a CPU
allocation into a stack array only when its scope is ``global`` and it is under 1 KiB
(``runtime::kMaxStackAlloca``); any other scope, ``local`` included, becomes a
``TVMBackendAllocWorkspace``/``FreeWorkspace`` pair around every task, and the buffer is heap memory
that LLVM cannot split into registers (SROA): the accumulators then go through memory at the end
of each tile, and each of the hundreds of tasks of a depthwise layer pays the pool allocator twice.
(On GPUs ``local`` means registers; this module is for the CPU templates only.)

Measured on Zen 4 (2 threads, tuned records, both builds in one process, 10 alternating rounds,
``global`` against ``local``, per-round ratio [95% interval]): MobileNetV2 0.914 [0.857, 0.963]
(3.82 against 4.26 ms; onnxruntime 4.23) and in a second run 0.977 [0.933, 1.011]; ResNet-18 0.986
[0.974, 1.025]; BERT-style encoder 1.003 [0.928, 1.064]; one-layer ResNet-18 convolutions: 7x7/2
0.994, 3x3/2 by phases 1.007, layer4 Winograd 0.958 [0.862, 1.036]. Per node, MobileNetV2's
depthwise layers, where onnxruntime had been faster on seven, then matched or beat it on all but
one (96 channels 3x3/2 at 112 x 112: 0.147 against 0.133 ms).
"""

from __future__ import annotations

from typing import Any

from tvm.s_tir import Schedule

#: storage scope of per-tile scratch buffers on CPU targets (see the module docstring)
TILE_SCOPE = "global"
#: TVM's ``runtime::kMaxStackAlloca``: a global-scope CPU allocation becomes a stack array only below it
STACK_LIMIT_BYTES = 1024


def keep_in_registers(sch: Schedule, block: Any, buffer_index: int = 0) -> None:
    """Give the buffer ``block`` writes (a tile computed per task) the scope that makes it a stack
    array under 1 KiB, which LLVM promotes to registers once its loops are unrolled."""
    sch.set_scope(block, buffer_index, TILE_SCOPE)
