"""End-to-end smoke tests of the spine: import, compile, run, save, load."""

import numpy as np
import pytest
from conftest import check_node


def test_conv_relu(rng):
    x = rng.standard_normal((1, 3, 8, 8)).astype(np.float32)
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    check_node("Conv", {"x": x}, {"pads": [1, 1, 1, 1]}, initializers={"w": w})


def test_matmul(rng):
    a = rng.standard_normal((2, 5, 7)).astype(np.float32)
    b = rng.standard_normal((7, 3)).astype(np.float32)
    check_node("MatMul", {"a": a, "b": b})


def test_conv_bias_bn_relu_is_one_kernel(rng):
    """BN folds into the conv weights and bias + ReLU fuse into the conv's epilogue."""
    import numpy as np
    from onnx import helper

    import portable
    from conftest import make_model

    x = rng.standard_normal((1, 3, 12, 12)).astype(np.float32)
    consts = {"w": rng.standard_normal((16, 3, 3, 3)).astype(np.float32),
              "b": rng.standard_normal(16).astype(np.float32),
              "s": rng.uniform(0.5, 1.5, 16).astype(np.float32), "t": rng.standard_normal(16).astype(np.float32),
              "m": rng.standard_normal(16).astype(np.float32), "v": rng.uniform(0.5, 1.5, 16).astype(np.float32)}
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("BatchNormalization", ["c", "s", "t", "m", "v"], ["n"]),
             helper.make_node("Relu", ["n"], ["y"])]
    model = make_model(nodes, {"x": x}, ["y"], consts)
    exe = portable.compile(model, cache=False)
    # one convolution kernel (NCHWc on x86) with everything fused, plus at most the conversion back to NCHW
    steps = [s["kernel"] for s in exe.plan.steps]
    conv_kernels = [k for k in steps if exe.plan.kernels[k]["family"].startswith("conv2d")]
    assert len(conv_kernels) == 1 and all(k in conv_kernels or "fromnchwc" in k for k in steps), steps
    from conftest import run_reference

    np.testing.assert_allclose(exe.run(x)[0], run_reference(model, {"x": x})[0], rtol=1e-4, atol=1e-4)


def test_run_outputs_are_fresh_arrays_and_inputs_alias_safely(rng) -> None:  # type: ignore[no-untyped-def]
    """Zero-copy I/O: each run returns new output arrays (an earlier result is never overwritten),
    and an input that does not start on a 64-byte boundary is read in place (the kernels reading
    graph inputs are built for any element-aligned address) with the same numbers."""
    import numpy as np
    from onnx import helper

    import portable
    from conftest import make_model

    a = rng.standard_normal((64, 32)).astype(np.float32)
    b = rng.standard_normal((32, 48)).astype(np.float32)
    model = make_model([helper.make_node("MatMul", ["a", "b"], ["y"])], {"a": a, "b": b}, ["y"])
    exe = portable.compile(model, cache=False)
    raw = np.empty(a.size + 1, np.float32)
    misaligned = raw[1:].reshape(a.shape)
    misaligned[...] = a
    first = exe.run(a, b)[0]
    kept = first.copy()
    assert misaligned.ctypes.data % 64 and exe.input_names == ["a", "b"]
    second = exe.run(misaligned, b)[0]
    assert "a" in exe._unaligned_ok  # read in place, not copied
    third = exe.run(2 * a, b)[0]
    assert first is not second and first.ctypes.data != third.ctypes.data
    np.testing.assert_array_equal(first, kept)  # not overwritten by later runs
    np.testing.assert_allclose(second, a @ b, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(third, 2 * (a @ b), rtol=1e-4, atol=1e-4)


def test_step_call_reruns_one_kernel_on_planned_buffers(rng) -> None:  # type: ignore[no-untyped-def]
    """bind + launch fill the planned buffers; step_call(i) reruns step i alone on them (what the
    kernel benchmarks time), and read() shows its result: a second MatMul's output is recomputed
    from the first's after that output buffer was cleared (numpy oracle)."""
    import numpy as np
    from onnx import helper

    import portable
    from conftest import make_model

    a = rng.standard_normal((16, 8)).astype(np.float32)
    w1 = rng.standard_normal((8, 12)).astype(np.float32)
    w2 = rng.standard_normal((12, 4)).astype(np.float32)
    nodes = [helper.make_node("MatMul", ["a", "w1"], ["h"]), helper.make_node("Relu", ["h"], ["r"]),
             helper.make_node("MatMul", ["r", "w2"], ["y"])]
    exe = portable.compile(make_model(nodes, {"a": a}, ["y"], {"w1": w1, "w2": w2}), cache=False)
    exe.bind(a=a)
    exe.launch()
    expected = np.maximum(a @ w1, 0) @ w2
    last = exe.plan.steps[-1]
    out = last["args"][-1]
    np.testing.assert_allclose(exe.read(out), expected, rtol=1e-4, atol=1e-4)
    exe._tensors[out].copyfrom(np.zeros_like(expected))
    exe.step_call(len(exe.plan.steps) - 1)()
    np.testing.assert_allclose(exe.read(out), expected, rtol=1e-4, atol=1e-4)


def test_run_reuses_an_output_only_once_nothing_refers_to_it(rng) -> None:  # type: ignore[no-untyped-def]
    """run() writes into the array it returned last time only when the caller dropped it: a kept
    result, a slice of it (whose base is the buffer, not the array), or a memoryview keep their
    numbers while later calls run on other inputs (numpy oracle)."""
    import numpy as np
    from onnx import helper

    import portable
    from conftest import make_model

    a = rng.standard_normal((16, 8)).astype(np.float32)
    w = rng.standard_normal((8, 12)).astype(np.float32)
    exe = portable.compile(make_model([helper.make_node("MatMul", ["a", "w"], ["y"])], {"a": a}, ["y"], {"w": w}),
                           cache=False)

    def run(scale: float) -> np.ndarray:
        return exe.run(a * scale)[0]

    kept = run(1.0)
    row = run(2.0)[3]  # only a view survives
    view = memoryview(run(3.0))
    for scale in (4.0, 5.0, 6.0):
        np.testing.assert_allclose(run(scale), scale * (a @ w), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(kept, a @ w, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(row, 2 * (a @ w)[3], rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(np.asarray(view), 3 * (a @ w), rtol=1e-4, atol=1e-4)
    first = id(run(7.0))  # dropped at once: the next call writes into the same array
    assert id(run(8.0)) == first
    assert run(9.0).ctypes.data % 64 == 0


@pytest.mark.parametrize("form", ["half_first", "half_last"])
def test_written_out_gelu_becomes_one_matmul_epilogue(rng, form: str) -> None:  # type: ignore[no-untyped-def]
    """x*0.5*(1+erf(x/sqrt2)) after MatMul+Add is rewritten to Gelu and fused: one kernel, same numbers."""
    import math

    import numpy as np
    from onnx import helper

    import portable
    from conftest import make_model, run_reference
    from portable.compiler.passes import fuse_gelu

    a = rng.standard_normal((16, 32)).astype(np.float32)
    consts = {"w": rng.standard_normal((32, 24)).astype(np.float32), "bias": rng.standard_normal(24).astype(np.float32),
              "sqrt2": np.array(math.sqrt(2), np.float32), "one": np.array(1, np.float32),
              "half": np.array(0.5, np.float32)}
    nodes = [helper.make_node("MatMul", ["a", "w"], ["m"]), helper.make_node("Add", ["m", "bias"], ["x"]),
             helper.make_node("Div", ["x", "sqrt2"], ["d"]), helper.make_node("Erf", ["d"], ["e"]),
             helper.make_node("Add", ["one", "e"], ["p"])]
    if form == "half_first":
        nodes += [helper.make_node("Mul", ["x", "half"], ["h"]), helper.make_node("Mul", ["h", "p"], ["y"])]
    else:
        nodes += [helper.make_node("Mul", ["p", "x"], ["h"]), helper.make_node("Mul", ["h", "half"], ["y"])]
    model = make_model(nodes, {"a": a}, ["y"], consts)
    from portable.compiler.passes import copy_graph

    graph = copy_graph(portable.load_onnx(model))
    assert fuse_gelu(graph) == 1 and [n.op for n in graph.nodes] == ["MatMul", "Add", "Gelu"]
    exe = portable.compile(model, cache=False)
    assert len(exe.plan.steps) == 1
    np.testing.assert_allclose(exe.run(a)[0], run_reference(model, {"a": a})[0], rtol=1e-5, atol=1e-5)
