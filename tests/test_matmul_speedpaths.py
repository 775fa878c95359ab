"""Fast paths of the x86 matmul and row-reduction templates: K slices, run-time B packing (also
through an inlined transpose), broadcast batches, rfactor-vectorised softmax / layer-norm sums.

Oracle: onnx's ReferenceEvaluator, at the default and at random knob points of each kernel's space.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
import onnx
import pytest
from onnx import helper
from onnx.reference import ReferenceEvaluator

from conftest import make_model
from test_tune import check_random_points

Built = tuple[onnx.ModelProto, dict[str, np.ndarray]]


def _mm_kslice_runtime(rng: np.random.Generator) -> Built:
    """Both operands at run time, K = 640 > 512 (sliced), N = 48 (3-vector tiles)."""
    a = rng.standard_normal((16, 640)).astype(np.float32)
    b = rng.standard_normal((640, 48)).astype(np.float32)
    return make_model([helper.make_node("MatMul", ["a", "b"], ["y"])], {"a": a, "b": b}, ["y"]), {"a": a, "b": b}


def _gemm_kslice_const_t(rng: np.random.Generator) -> Built:
    """Constant transposed B packed at compile time, bias + Relu epilogue, sliced K."""
    a = rng.standard_normal((24, 768)).astype(np.float32)
    w = rng.standard_normal((64, 768)).astype(np.float32)
    c = rng.standard_normal((64,)).astype(np.float32)
    nodes = [helper.make_node("Gemm", ["a", "w", "c"], ["g"], transB=1), helper.make_node("Relu", ["g"], ["y"])]
    return make_model(nodes, {"a": a}, ["y"], {"w": w, "c": c}), {"a": a}


def _attention_scores(rng: np.random.Generator) -> Built:
    """q @ k^T with the transpose inlined into the matmul's B read, scaled, then softmax."""
    q = rng.standard_normal((2, 32, 16)).astype(np.float32)
    k = rng.standard_normal((2, 64, 16)).astype(np.float32)
    nodes = [helper.make_node("Transpose", ["k"], ["kt"], perm=[0, 2, 1]),
             helper.make_node("MatMul", ["q", "kt"], ["s"]),
             helper.make_node("Mul", ["s", "scale"], ["ss"]),
             helper.make_node("Softmax", ["ss"], ["y"], axis=-1)]
    return make_model(nodes, {"q": q, "k": k}, ["y"], {"scale": np.array(0.25, np.float32)}), {"q": q, "k": k}


def _bmm_broadcast(rng: np.random.Generator) -> Built:
    """Batched A against one run-time 2-D B (broadcast over the batch)."""
    a = rng.standard_normal((3, 16, 64)).astype(np.float32)
    b = rng.standard_normal((64, 32)).astype(np.float32)
    return make_model([helper.make_node("MatMul", ["a", "b"], ["y"])], {"a": a, "b": b}, ["y"]), {"a": a, "b": b}


def _layernorm_rows(rng: np.random.Generator) -> Built:
    """Rows of 128: both sums (mean, squared deviations) take the rfactor path."""
    x = rng.standard_normal((2, 8, 128)).astype(np.float32)
    s = rng.uniform(0.5, 1.5, 128).astype(np.float32)
    b = rng.standard_normal(128).astype(np.float32)
    node = helper.make_node("LayerNormalization", ["x", "s", "b"], ["y"], axis=-1, epsilon=1e-5)
    return make_model([node], {"x": x}, ["y"], {"s": s, "b": b}), {"x": x}


def _log_softmax_short_rows(rng: np.random.Generator) -> Built:
    """Rows of 24 (too short to rfactor) next to the vectorised output."""
    x = rng.standard_normal((5, 24)).astype(np.float32) * 4
    return make_model([helper.make_node("LogSoftmax", ["x"], ["y"], axis=-1)], {"x": x}, ["y"]), {"x": x}


#: (id, builder, random knob points per kernel besides the default)
WORKLOADS: list[tuple[str, Callable[[np.random.Generator], Built], int]] = [
    ("mm_kslice_runtime", _mm_kslice_runtime, 5), ("gemm_kslice_const_t", _gemm_kslice_const_t, 4),
    ("attention_scores", _attention_scores, 3), ("bmm_broadcast", _bmm_broadcast, 3),
    ("layernorm_rows", _layernorm_rows, 1), ("log_softmax_short_rows", _log_softmax_short_rows, 1),
]


@pytest.mark.parametrize("name,builder,n_random", WORKLOADS, ids=[w[0] for w in WORKLOADS])
def test_template_points_match_reference(name: str, builder: Callable[[np.random.Generator], Built],
                                         n_random: int, monkeypatch: Any) -> None:
    """The default and random knob points of every kernel compute what ReferenceEvaluator does."""
    import portable

    monkeypatch.setenv("PORTABLE_STRICT_SCHEDULES", "1")  # a failing point must fail, not fall back
    model, feeds = builder(np.random.default_rng(0))
    expected = ReferenceEvaluator(model).run(None, feeds)
    check_random_points(name, portable.load_onnx(model), feeds, expected, n_random, tol=1e-4)


def _scheduled(model: onnx.ModelProto, family: str) -> str:
    """TVMScript of the default schedule of the first kernel of ``family`` in ``model``."""
    import portable
    from portable.compiler.fuse import fuse
    from portable.compiler.lower import lower_group
    from portable.compiler.passes import simplify
    from portable.targets import resolve_target
    from schedules import ScheduleContext, apply_schedule

    tgt = resolve_target("host")
    graph = simplify(portable.load_onnx(model), tgt)
    for gi, group in enumerate(fuse(graph)):
        kernel = lower_group(graph, group, gi)
        if kernel.family == family:
            ctx = ScheduleContext(kernel.family, kernel.anchor_block, kernel.anchor_attrs, tgt,
                                  set(kernel.const_args))
            func, used = apply_schedule(kernel.func, ctx)
            assert "fallback" not in used, f"{family} template fell back to the generic schedule"
            return func.script()
    raise AssertionError(f"no {family} kernel")


def test_runtime_b_is_packed_into_panels_through_an_inlined_transpose() -> None:
    """attention's K^T operand is copied into [.., N/nr, K, nr] panels, not read with a stride."""
    model, _ = _attention_scores(np.random.default_rng(0))
    script = _scheduled(model, "matmul")
    panel = [ln for ln in script.splitlines() if "_global = T.sblock_alloc_buffer" in ln and "p1" in ln]
    assert panel, f"no packed B panel in:\n{script}"
    # k [2, 64, 16] read as B[b, kk, j] = k[b, j, kk]: j (64) split by nr and moved last
    shape = [int(d) for d in panel[0].split("((")[1].split(")")[0].split(",")]
    assert shape[0] == 2 and shape[2] == 16 and shape[1] * shape[3] == 64 and shape[3] % 16 == 0, panel[0]


def test_softmax_sum_is_vectorised() -> None:
    """The exp-sum of a softmax is split into lane-wide partial sums under a vectorised loop."""
    model, _ = _attention_scores(np.random.default_rng(0))
    lines = _scheduled(model, "softmax").splitlines()
    at = next((i for i, ln in enumerate(lines) if 'T.sblock("softmax_sum_rf")' in ln), None)
    assert at is not None, "\n".join(lines)
    assert "T.vectorized(" in lines[at - 1], "\n".join(lines)
