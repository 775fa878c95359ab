"""Auto-tuner: template spaces, measurement isolation, logs, knob lookup and transfer, end to end.

Oracles: onnx's ReferenceEvaluator / numpy for kernel outputs, hand-built record sets for the log
operations, and the measured candidates themselves for the tuner.
"""

from __future__ import annotations

import json
import random
import warnings
from typing import Any, Callable

import numpy as np
import onnx
import pytest
from onnx import helper
from onnx.reference import ReferenceEvaluator

from conftest import make_model

# ---------------------------------------------------------------------------------------- helpers


def _mm(rng: np.random.Generator) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    a = rng.standard_normal((24, 40)).astype(np.float32)
    b = rng.standard_normal((40, 36)).astype(np.float32)
    node = helper.make_node("MatMul", ["a", "b"], ["y"])
    return make_model([node], {"a": a}, ["y"], {"b": b}), {"a": a}


def _bmm(rng: np.random.Generator) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    a = rng.standard_normal((2, 8, 16)).astype(np.float32)
    b = rng.standard_normal((2, 16, 12)).astype(np.float32)
    node = helper.make_node("MatMul", ["a", "b"], ["y"])
    return make_model([node], {"a": a, "b": b}, ["y"]), {"a": a, "b": b}


def _gemm_relu(rng: np.random.Generator) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    a = rng.standard_normal((10, 32)).astype(np.float32)
    w = rng.standard_normal((20, 32)).astype(np.float32)
    c = rng.standard_normal((20,)).astype(np.float32)
    nodes = [helper.make_node("Gemm", ["a", "w", "c"], ["g"], transB=1), helper.make_node("Relu", ["g"], ["y"])]
    return make_model(nodes, {"a": a}, ["y"], {"w": w, "c": c}), {"a": a}


def _conv_relu(rng: np.random.Generator) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    x = rng.standard_normal((1, 6, 10, 10)).astype(np.float32)
    w = rng.standard_normal((8, 6, 3, 3)).astype(np.float32)
    b = rng.standard_normal((8,)).astype(np.float32)
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["y"])]
    return make_model(nodes, {"x": x}, ["y"], {"w": w, "b": b}), {"x": x}


def _conv_s2_g2(rng: np.random.Generator) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    x = rng.standard_normal((1, 4, 9, 9)).astype(np.float32)
    w = rng.standard_normal((6, 2, 3, 3)).astype(np.float32)
    node = helper.make_node("Conv", ["x", "w"], ["y"], strides=[2, 2], group=2, pads=[0, 1, 0, 1])
    return make_model([node], {"x": x}, ["y"], {"w": w}), {"x": x}


def _elemwise(rng: np.random.Generator) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    x = rng.standard_normal((3, 50)).astype(np.float32)
    z = rng.standard_normal((3, 50)).astype(np.float32)
    nodes = [helper.make_node("Add", ["x", "z"], ["s"]), helper.make_node("Sigmoid", ["s"], ["y"])]
    return make_model(nodes, {"x": x, "z": z}, ["y"]), {"x": x, "z": z}


def _maxpool(rng: np.random.Generator) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    x = rng.standard_normal((1, 3, 8, 8)).astype(np.float32)
    node = helper.make_node("MaxPool", ["x"], ["y"], kernel_shape=[2, 2], strides=[2, 2])
    return make_model([node], {"x": x}, ["y"]), {"x": x}


def _softmax(rng: np.random.Generator) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    x = rng.standard_normal((4, 33)).astype(np.float32)
    node = helper.make_node("Softmax", ["x"], ["y"], axis=-1)
    return make_model([node], {"x": x}, ["y"]), {"x": x}


def _layernorm(rng: np.random.Generator) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    x = rng.standard_normal((4, 24)).astype(np.float32)
    s = rng.standard_normal((24,)).astype(np.float32)
    b = rng.standard_normal((24,)).astype(np.float32)
    node = helper.make_node("LayerNormalization", ["x", "s", "b"], ["y"], axis=-1)
    return make_model([node], {"x": x}, ["y"], {"s": s, "b": b}), {"x": x}


def _nchwc_chain(rng: np.random.Generator) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    """NCHW-input conv -> blocked strided conv + residual Add -> depthwise -> max and average pools (NCHWc)."""
    x = rng.standard_normal((1, 3, 14, 14)).astype(np.float32)
    consts = {"w1": rng.standard_normal((32, 3, 3, 3)).astype(np.float32) * 0.3,
              "w2": rng.standard_normal((32, 32, 3, 3)).astype(np.float32) * 0.1,
              "b2": rng.standard_normal(32).astype(np.float32),
              "w3": rng.standard_normal((32, 1, 3, 3)).astype(np.float32)}
    nodes = [helper.make_node("Conv", ["x", "w1"], ["c1"], pads=[1, 1, 1, 1]),
             helper.make_node("Conv", ["c1", "w2", "b2"], ["c2"], pads=[1, 1, 1, 1]),
             helper.make_node("Add", ["c1", "c2"], ["r"]),
             helper.make_node("Conv", ["r", "w3"], ["c3"], pads=[1, 1, 1, 1], group=32, strides=[2, 2]),
             helper.make_node("MaxPool", ["c3"], ["p1"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
             helper.make_node("AveragePool", ["p1"], ["y"], kernel_shape=[2, 2], strides=[1, 1])]
    return make_model(nodes, {"x": x}, ["y"], consts), {"x": x}


def _winograd(rng: np.random.Generator) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    """A blocked 3x3 stride-1 convolution at 14x14 (Winograd) with bias, residual add and ReLU."""
    x = rng.standard_normal((1, 16, 14, 14)).astype(np.float32)
    consts = {"w1": rng.standard_normal((32, 16, 1, 1)).astype(np.float32) * 0.3,
              "w2": rng.standard_normal((32, 32, 3, 3)).astype(np.float32) * 0.1,
              "b2": rng.standard_normal(32).astype(np.float32)}
    nodes = [helper.make_node("Conv", ["x", "w1"], ["c1"]),
             helper.make_node("Conv", ["c1", "w2", "b2"], ["c2"], pads=[1, 1, 1, 1]),
             helper.make_node("Add", ["c1", "c2"], ["r"]), helper.make_node("Relu", ["r"], ["y"])]
    return make_model(nodes, {"x": x}, ["y"], consts), {"x": x}


def _stem(rng: np.random.Generator) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    """A 7x7 stride-2 first layer on 3 channels, 30 x 30 out: F(4x4, 4x4) over densely packed phases."""
    x = rng.standard_normal((1, 3, 60, 60)).astype(np.float32)
    consts = {"w": rng.standard_normal((32, 3, 7, 7)).astype(np.float32) * 0.2,
              "b": rng.standard_normal(32).astype(np.float32)}
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[3, 3, 3, 3], strides=[2, 2]),
             helper.make_node("Relu", ["c"], ["y"])]
    return make_model(nodes, {"x": x}, ["y"], consts), {"x": x}


#: (id, model builder, random points per task besides the default)
WORKLOADS: list[tuple[str, Callable[..., Any], int]] = [
    ("matmul", _mm, 4), ("batch_matmul", _bmm, 2), ("gemm_relu", _gemm_relu, 2),
    ("conv_relu", _conv_relu, 4), ("conv_s2_g2", _conv_s2_g2, 2), ("elemwise", _elemwise, 2),
    ("maxpool", _maxpool, 1), ("softmax", _softmax, 1), ("layernorm", _layernorm, 1),
    ("nchwc_chain", _nchwc_chain, 5), ("winograd", _winograd, 4), ("stem", _stem, 3),
]


def _grad_graph(op: str, inputs: dict[str, np.ndarray], attrs: dict[str, Any]) -> Any:
    """A one-node portable Graph of a training-only gradient operator (no ONNX form exists)."""
    import portable.autodiff  # noqa: F401  (registers the gradient operators)
    from portable.autodiff import GradBuilder
    from portable.graph import Graph, TensorInfo

    values = {k: TensorInfo(v.shape, str(v.dtype)) for k, v in inputs.items()}
    g = Graph("grad", list(inputs), [], [], values, {}, set(), 17)
    out = GradBuilder(g).op(op, *inputs, **attrs)
    g.outputs = [out]
    g.output_names = [out]  # type: ignore[attr-defined]
    return g


def _np_conv_grads(x: np.ndarray, w: np.ndarray, dy: np.ndarray, s: int, p: int) -> tuple[np.ndarray, np.ndarray]:
    """numpy oracle: (dX, dW) of a square-kernel 2-D convolution with stride s and symmetric pad p."""
    k, (oh, ow) = w.shape[2], dy.shape[2:]
    xp = np.pad(x, ((0, 0), (0, 0), (p, p), (p, p)))
    dxp, dw = np.zeros_like(xp), np.zeros_like(w)
    for ky in range(k):
        for kx in range(k):
            win = (slice(None), slice(None), slice(ky, ky + s * (oh - 1) + 1, s), slice(kx, kx + s * (ow - 1) + 1, s))
            dw[:, :, ky, kx] = np.einsum("noij,ncij->oc", dy, xp[win])
            dxp[win] += np.einsum("noij,oc->ncij", dy, w[:, :, ky, kx])
    return dxp[:, :, p:p + x.shape[2], p:p + x.shape[3]], dw


def _conv_grad_workload(which: str, s: int) -> Callable[..., Any]:
    def build(rng: np.random.Generator) -> tuple[Any, dict[str, np.ndarray], list[np.ndarray]]:
        x = rng.standard_normal((2, 8, 9, 9)).astype(np.float32)
        w = rng.standard_normal((16, 8, 3, 3)).astype(np.float32)
        o = (9 + 2 - 3) // s + 1
        dy = rng.standard_normal((2, 16, o, o)).astype(np.float32)
        attrs = {"kernel_shape": [3, 3], "strides": [s, s], "pads": [1, 1, 1, 1], "dilations": [1, 1], "group": 1}
        dx, dw = _np_conv_grads(x, w, dy, s, 1)
        if which == "data":
            feeds = {"dy": dy, "w": w}
            return _grad_graph("ConvDataGrad", feeds, {**attrs, "input_shape": list(x.shape)}), feeds, [dx]
        feeds = {"x": x, "dy": dy}
        return _grad_graph("ConvWeightGrad", feeds, attrs), feeds, [dw]

    return build


#: training-only kernels: (id, builder -> (portable Graph, inputs, numpy-oracle outputs), random points)
GRAD_WORKLOADS: list[tuple[str, Callable[..., Any], int]] = [
    ("conv_dgrad_s2", _conv_grad_workload("data", 2), 3), ("conv_wgrad_s1", _conv_grad_workload("weight", 1), 3),
]


@pytest.mark.parametrize("name,builder,n_random", GRAD_WORKLOADS, ids=[w[0] for w in GRAD_WORKLOADS])
def test_gradient_template_random_points_match_numpy(name: str, builder: Callable[..., Any], n_random: int,
                                                     monkeypatch: Any) -> None:
    """Random knob points of the gradient kernels' templates compute what the numpy oracle does."""
    monkeypatch.setenv("PORTABLE_STRICT_SCHEDULES", "1")
    graph, inputs, expected = builder(np.random.default_rng(0))
    check_random_points(name, graph, inputs, expected, n_random, tol=2e-4)


def _points(task: Any, n_random: int, seed: int) -> list[dict[str, Any]]:
    """The default plus ``n_random`` distinct random points of the task's space."""
    space = task.space()
    rng = random.Random(seed)
    points = [task.defaults()]
    ids = {json.dumps(points[0], sort_keys=True)}
    for _ in range(50 * n_random):
        if len(points) > n_random:
            break
        p = {k: rng.choice(v) for k, v in space.items()}
        if json.dumps(p, sort_keys=True) not in ids:
            ids.add(json.dumps(p, sort_keys=True))
            points.append(p)
    return points


def check_random_points(name: str, graph: Any, inputs: dict[str, np.ndarray], expected: list[Any],
                        n_random: int, tol: float) -> None:
    """For every tunable kernel of ``graph``: compile with its default and ``n_random`` random knob
    points (template defaults elsewhere), check the compiler used them, compare outputs with ``expected``.

    Callers set PORTABLE_STRICT_SCHEDULES=1, so a failing point fails instead of falling back."""
    from portable.tune.tasks import extract_tasks

    tasks = extract_tasks(graph, "host", min_space=1)
    assert tasks, f"{name}: no kernel found"
    for ti, task in enumerate(tasks):
        check_points(name, graph, inputs, expected, task, _points(task, n_random, seed=ti), tol)


def check_points(name: str, graph: Any, inputs: dict[str, np.ndarray], expected: list[Any], task: Any,
                 points: list[dict[str, Any]], tol: float) -> None:
    """Compile ``graph`` with each knob point for ``task``'s kernel (template defaults elsewhere),
    check the compiler used it, and compare the outputs with ``expected``."""
    from portable.compiler.build import compile_graph, workload_key

    for knobs in points:
        exe = compile_graph(graph, "host", lambda k, t, kn=knobs, wk=task.workload: (
            kn if workload_key(k.func) == wk else None))
        used = [k["knobs"] for k in exe.plan.kernels.values() if k["workload"] == task.workload]
        assert used == [knobs], f"{name}: the compiler did not use knobs {knobs}"
        for g, e in zip(exe.run(**inputs), expected):
            np.testing.assert_allclose(g, e, rtol=tol, atol=tol, err_msg=f"{name} / {task.family} with knobs {knobs}")


@pytest.mark.parametrize("b_panels", ["kernel", "task"])
def test_runtime_b_packed_once_or_per_task_matches_numpy(b_panels: str, monkeypatch: Any) -> None:
    """A run-time B (2-D, and batched behind a transpose as attention's K^T) packed into panels once
    per call or per task gives numpy's product; several row blocks share each B block."""
    import portable
    from portable.compiler.build import compile_graph

    monkeypatch.setenv("PORTABLE_STRICT_SCHEDULES", "1")
    rng = np.random.default_rng(3)
    a2, b2 = rng.standard_normal((96, 64)).astype(np.float32), rng.standard_normal((64, 64)).astype(np.float32)
    a3, b3 = rng.standard_normal((2, 64, 48)).astype(np.float32), rng.standard_normal((2, 32, 48)).astype(np.float32)
    nodes = [helper.make_node("MatMul", ["a2", "b2"], ["y2"]),
             helper.make_node("Transpose", ["b3"], ["bt"], perm=[0, 2, 1]),
             helper.make_node("MatMul", ["a3", "bt"], ["y3"])]
    feeds = {"a2": a2, "b2": b2, "a3": a3, "b3": b3}
    graph = portable.load_onnx(make_model(nodes, feeds, ["y2", "y3"]))
    knobs = {"mr": 4, "nr": 16, "mb": 32, "pack_b": True, "b_panels": b_panels}
    exe = compile_graph(graph, "host", lambda k, t: knobs if k.family == "matmul" else None)
    used = [k["knobs"] for k in exe.plan.kernels.values() if k["family"] == "matmul"]
    assert len(used) == 2 and all(u["b_panels"] == b_panels and u["mb"] == 32 for u in used), used
    y2, y3 = exe.run(**feeds)
    np.testing.assert_allclose(y2, a2 @ b2, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(y3, a3 @ b3.transpose(0, 2, 1), rtol=1e-4, atol=1e-4)


def _two_tasks_with(nodes: list[Any], x: np.ndarray, consts: dict[str, np.ndarray], knob: str) -> tuple[Any, np.ndarray, list[Any]]:
    """The graph of a two-convolution model reading ``x``, its reference output, and its two tuning
    tasks whose space has ``knob``."""
    import portable
    from portable.tune.tasks import extract_tasks

    model = make_model(nodes, {"x": x}, ["y"], consts)
    graph = portable.load_onnx(model)
    tasks = [t for t in extract_tasks(graph, "host", min_space=1) if knob in t.space()]
    assert len(tasks) == 2, [t.family for t in tasks]
    return graph, ReferenceEvaluator(model).run(None, {"x": x})[0], tasks


def test_conv_ic_chunks_match_reference(monkeypatch: Any) -> None:
    """Blocked direct convolutions with the reduction split into input-channel chunks (accumulators
    in an L1 buffer over the task's rows): every ic_chunk x rows_per_task point of each kernel, the
    largest and the smallest register tile, a prime width (partial column tiles), 3 input blocks."""

    monkeypatch.setenv("PORTABLE_STRICT_SCHEDULES", "1")
    rng = np.random.default_rng(5)
    x = rng.standard_normal((1, 48, 13, 13)).astype(np.float32)
    consts = {"w1": rng.standard_normal((32, 48, 3, 3)).astype(np.float32) * 0.1,
              "b1": rng.standard_normal(32).astype(np.float32),
              "w2": rng.standard_normal((32, 32, 1, 1)).astype(np.float32) * 0.2}
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1], strides=[2, 2]),
             helper.make_node("Relu", ["c1"], ["r"]), helper.make_node("Conv", ["r", "w2"], ["y"])]
    graph, expected, tasks = _two_tasks_with(nodes, x, consts, "ic_chunk")
    for task in tasks:
        space = task.space()
        assert space["ic_chunk"][0] == 0 and 1 in space["ic_chunk"]
        points = [{**task.defaults(), "ic_chunk": chunk, "rows_per_task": rows, "tile": tile}
                  for chunk in space["ic_chunk"][1:] for rows in space["rows_per_task"]
                  for tile in dict.fromkeys((space["tile"][0], space["tile"][-1]))]
        for i, point in enumerate(points):  # both task orders, alternately
            point["task_order"] = space["task_order"][i % 2]
        check_points("conv_ic_chunks", graph, {"x": x}, [expected], task, points, tol=2e-4)
    # the default splits rows first where the input outweighs the weights (the first convolution's
    # padded 15x15x48 input against its 14k weights: no; the second's 7x7x32 against 1k: yes), and a
    # record written before task_order existed keeps the channel-first split it measured
    assert [t.defaults()["task_order"] for t in tasks] == ["channels", "rows"]
    from portable.compiler.build import compile_graph, workload_key

    old_record = {k: v for k, v in tasks[1].defaults().items() if k != "task_order"}
    exe = compile_graph(graph, "host", lambda k, t: old_record if workload_key(k.func) == tasks[1].workload else None)
    orders = [k["knobs"].get("task_order") for k in exe.plan.kernels.values() if k["family"] == "conv2d_nchwc"]
    assert orders == ["channels", "channels"]
    np.testing.assert_allclose(exe.run(x=x)[0], expected, rtol=2e-4, atol=2e-4)


def _grouped_conv_pair(seed: int, x_shape: tuple[int, ...], w1_shape: tuple[int, ...], w2_shape: tuple[int, ...],
                       groups: tuple[int, int], pads2: list[int] | None) -> tuple[np.ndarray, dict[str, np.ndarray], list[Any]]:
    """Input, constants and nodes of grouped conv (with bias) -> ReLU -> grouped conv (``pads2``)."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(x_shape).astype(np.float32)
    consts = {"w1": rng.standard_normal(w1_shape).astype(np.float32),
              "b1": rng.standard_normal(w1_shape[0]).astype(np.float32),
              "w2": rng.standard_normal(w2_shape).astype(np.float32) * 0.2}
    pads = {"pads": pads2} if pads2 else {}
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], group=groups[0]),
             helper.make_node("Relu", ["c1"], ["r"]),
             helper.make_node("Conv", ["r", "w2"], ["y"], group=groups[1], **pads)]
    return x, consts, nodes


def test_grouped_conv_rows_match_reference(monkeypatch: Any) -> None:
    """Grouped convolutions whose groups do not fill a vector (3 and 9 output channels per group) in
    both vector axes: every oc_block x ow_block point along the row, the default along the channels;
    a 1x1 and a padded 3x3 (odd width 11, batch 2)."""

    monkeypatch.setenv("PORTABLE_STRICT_SCHEDULES", "1")
    x, consts, nodes = _grouped_conv_pair(6, (2, 6, 5, 11), (27, 2, 1, 1), (9, 9, 3, 3), (3, 3), [1, 1, 1, 1])
    graph, expected, tasks = _two_tasks_with(nodes, x, consts, "vector_axis")
    for task in tasks:
        space = task.space()
        points = [{**task.defaults(), "vector_axis": "width", "oc_block": ob, "ow_block": wb}
                  for ob in space["oc_block"] for wb in space["ow_block"]]
        check_points("grouped_conv_rows", graph, {"x": x}, [expected], task, [task.defaults(), *points], tol=2e-4)
    # a record written before the knob existed keeps the channel tiling it measured
    from portable.compiler.build import compile_graph

    old_record = {"oc_block": tasks[0].space()["oc_block"][-1], "ow_block": 1, "inline_pad": False}
    exe = compile_graph(graph, "host", lambda k, t: old_record if k.family == "conv2d" else None)
    assert [k["knobs"]["vector_axis"] for k in exe.plan.kernels.values() if k["family"] == "conv2d"] == ["oc", "oc"]
    np.testing.assert_allclose(exe.run(x=x)[0], expected, rtol=2e-4, atol=2e-4)


def test_grouped_pointwise_conv_along_flattened_pixels_matches_reference(monkeypatch: Any) -> None:
    """Unpadded grouped 1x1 convolutions (6 and 4 input channels per group, batch 2, 8x8 images: whole
    vectors of pixels) vectorised along the flattened image: every oc_block point, with a bias and
    ReLU epilogue and without; a padded or 3x3 convolution is never offered the pixel axis."""

    monkeypatch.setenv("PORTABLE_STRICT_SCHEDULES", "1")
    x, consts, nodes = _grouped_conv_pair(7, (2, 12, 8, 8), (12, 6, 1, 1), (18, 4, 1, 1), (2, 3), None)
    graph, expected, tasks = _two_tasks_with(nodes, x, consts, "vector_axis")
    for task in tasks:
        space = task.space()
        assert "pixels" in space["vector_axis"], space
        points = [{**task.defaults(), "vector_axis": "pixels", "oc_block": ob} for ob in space["oc_block"]]
        check_points("grouped_pointwise_pixels", graph, {"x": x}, [expected], task, points, tol=2e-4)
    x, consts, nodes = _grouped_conv_pair(7, (2, 12, 8, 8), (12, 6, 1, 1), (18, 4, 1, 1), (2, 3), [1, 1, 1, 1])
    _, _, padded = _two_tasks_with(nodes, x, consts, "vector_axis")
    assert "pixels" not in padded[1].space()["vector_axis"]


# ------------------------------------------------------------------------- template spaces are correct

@pytest.mark.parametrize("name,builder,n_random", WORKLOADS, ids=[w[0] for w in WORKLOADS])
def test_template_space_random_points_match_reference(name: str, builder: Callable[..., Any],
                                                      n_random: int, monkeypatch: Any) -> None:
    """Random points of every tunable kernel's knob space compute what the reference evaluator does."""
    import portable

    monkeypatch.setenv("PORTABLE_STRICT_SCHEDULES", "1")  # a failing point must not fall back silently
    model, inputs = builder(np.random.default_rng(0))
    expected = [np.asarray(o) for o in ReferenceEvaluator(model).run(None, inputs)]
    check_random_points(name, portable.load_onnx(model), inputs, expected, n_random, tol=2e-4)


def test_every_registered_x86_template_was_checked() -> None:
    """The workloads above reach every registered x86 template (add a workload for a new one)."""
    import portable
    from portable.tune.tasks import extract_tasks
    from schedules.registry import TEMPLATES, get_template

    get_template("generic", "x86")
    covered = set()
    for _, builder, _ in WORKLOADS:
        model, _ = builder(np.random.default_rng(0))
        covered |= {t.template().family for t in extract_tasks(portable.load_onnx(model), "host", min_space=1)}
    for _, grad_builder, _ in GRAD_WORKLOADS:
        covered |= {t.template().family for t in extract_tasks(grad_builder(np.random.default_rng(0))[0], "host")}
    registered = {fam for fam, tf in TEMPLATES if tf == "x86"}
    assert registered <= covered, f"templates without a workload: {registered - covered}"


# --------------------------------------------------------------------------------------- search/model


def test_search_never_repeats_and_exhausts_space() -> None:
    """Proposals are distinct, skip measured points, start with the default and cover the space."""
    from portable.tune.records import knob_id
    from portable.tune.search import TaskSearch

    space = {"a": [1, 2, 4, 8], "b": [True, False], "c": ["x", "y", "z"]}
    s = TaskSearch(space, {"a": 2, "b": False, "c": "y"}, seed=1, warmup=4)
    s.add({"a": 8, "b": True, "c": "z"}, None)  # resumed failure: must never come back
    seen = [knob_id({"a": 8, "b": True, "c": "z"})]
    first = True
    while not s.exhausted:
        batch = s.propose(5)
        assert batch, "search stopped before the space was exhausted"
        if first:
            assert batch[0] == {"a": 2, "b": False, "c": "y"}
            first = False
        for p in batch:
            kid = knob_id(p)
            assert kid not in seen
            seen.append(kid)
            s.add(p, 1e-3 * p["a"] * (2 if p["b"] else 1))
    assert len(seen) == 24 == len(set(seen))
    assert s.best == ({"a": 1, "b": False, "c": s.best[0]["c"]}, 1e-3)


def test_cost_model_ranks_a_learnable_function() -> None:
    """After training on half the points, the model's top pick is among the truly fast ones."""
    from portable.tune.cost_model import CostModel

    space = {"tile_m": [1, 2, 4, 8, 16], "tile_n": [4, 8, 16, 32], "unroll": [True, False]}
    pts = [{"tile_m": m, "tile_n": n, "unroll": u} for m in space["tile_m"] for n in space["tile_n"]
           for u in space["unroll"]]

    def cost(p: dict[str, Any]) -> float:
        return (abs(np.log2(p["tile_m"] * p["tile_n"]) - 6) + 1) * (0.8 if p["unroll"] else 1.0) * 1e-3

    rng = random.Random(0)
    rng.shuffle(pts)
    train, test = pts[:20], pts[20:]
    model = CostModel(space)
    model.fit(train, [cost(p) for p in train])
    assert model.trained
    pred = model.predict(test)
    truth = sorted(cost(p) for p in test)
    assert cost(test[int(np.argmax(pred))]) <= truth[len(truth) // 4]


# ------------------------------------------------------------------------------------ measurement


@pytest.fixture(scope="module")
def tiny_matmul_task() -> Any:
    """A small matmul task on the host."""
    from portable.tune.tasks import kernel_task

    return kernel_task("matmul", "32x24x16")


def _elemwise_task() -> Any:
    import portable
    from portable.tune.tasks import extract_tasks

    model, _ = _elemwise(np.random.default_rng(0))
    return extract_tasks(portable.load_onnx(model), "host")[0]


def test_measure_isolates_raising_crashing_and_hanging_candidates(tiny_matmul_task: Any) -> None:
    """A template error, a segfault and a hang are recorded as failures and measuring goes on."""
    from portable.tune.measure import MeasureOptions, Measurer

    task = _elemwise_task()
    with Measurer(MeasureOptions(timeout_s=6, repeat=2, min_repeat_ms=1)) as m:
        bad = m.measure(task, [{"chunks_per_core": None, "vectorize": True}])[0]
        assert bad.error and bad.error.startswith("schedule:") and not bad.verified
        crash = m.measure(task, [task.defaults()], fault="segfault")[0]
        assert crash.error and "SIGSEGV" in crash.error and crash.median_s is None
        hang = m.measure(task, [task.defaults()], fault="hang")[0]
        assert hang.error and hang.error.startswith("timeout")
        good = m.measure(tiny_matmul_task, [tiny_matmul_task.defaults()])[0]
        assert good.ok and good.median_s > 0, good.error
        assert m.restarts == 2


def test_parallel_builders_compile_a_batch_and_survive_a_crashing_build(tiny_matmul_task: Any) -> None:
    """A batch compiled by two builder processes: the candidate whose builder segfaults is a failure,
    the others are verified and timed exactly as if compiled in the measuring worker."""
    from portable.tune.measure import MeasureOptions, Measurer

    task = tiny_matmul_task
    space = task.space()
    cands = [task.defaults()] + [{**task.defaults(), "mr": m} for m in space["mr"] if m != task.defaults()["mr"]][:2]
    with Measurer(MeasureOptions(timeout_s=60, repeat=2, min_repeat_ms=1), builders=2) as m:
        res = m.measure(task, cands, build_fault={1: "segfault"})
        assert len(m._builders) == 2
    assert res[1].error and "SIGSEGV" in res[1].error and not res[1].verified
    for r in res[:1] + res[2:]:
        assert r.ok and r.median_s > 0 and r.build_s > 0, r.error


def test_every_cache_protocol_times_a_verified_candidate(tiny_matmul_task: Any) -> None:
    """cold, warm and hot each verify and time a candidate; warm evicts with the worker's own kernel
    (refused over RPC, where it has none); an unknown protocol is refused up front."""
    from portable.tune.measure import CACHE_PROTOCOLS, MeasureOptions, Measurer

    for cache in CACHE_PROTOCOLS:
        with Measurer(MeasureOptions(timeout_s=60, repeat=2, number=2, min_repeat_ms=1, cache=cache), builders=0) as m:
            (res,) = m.measure(tiny_matmul_task, [tiny_matmul_task.defaults()])
        assert res.ok and res.median_s > 0, (cache, res.error)
        assert res.to_record(tiny_matmul_task, cache).cache == cache
    with pytest.raises(ValueError, match="cache protocol 'lukewarm'"):
        Measurer(MeasureOptions(cache="lukewarm"))
    with pytest.raises(ValueError, match="this machine only"):
        Measurer(MeasureOptions(cache="warm"), rpc=("127.0.0.1", 9190))


def test_l2_eviction_kernel_overwrites_its_scratch_in_parallel() -> None:
    """The warm protocol's preproc is a registered global function whose call changes its scratch."""
    import tvm

    from portable.tune._worker import _evictor_state, _l2_evictor, l2_bytes

    assert l2_bytes() >= 64 << 10
    name = _l2_evictor()
    _, (src, dst), _ = _evictor_state[name]
    tvm.get_global_func(name)()
    assert float(dst.numpy()[::4099].min()) == 1.0 and src.shape[0] * 4 >= 2 * l2_bytes()


def test_outputs_match_detects_wrong_results() -> None:
    """The candidate check rejects a perturbed output and accepts rounding-level differences."""
    from portable.tune._worker import outputs_match

    ref = np.random.default_rng(0).standard_normal((16, 16)).astype(np.float32)
    assert outputs_match(ref * (1 + 1e-6), ref, 1e-3, 1e-3)[0]
    wrong = ref.copy()
    wrong[3, 4] += 0.5
    assert not outputs_match(wrong, ref, 1e-3, 1e-3)[0]
    assert not outputs_match(ref[:8], ref, 1e-3, 1e-3)[0]
    assert not outputs_match(np.full_like(ref, np.nan), ref, 1e-3, 1e-3)[0]


def test_measure_over_rpc_loopback(tiny_matmul_task: Any) -> None:
    """Candidates are uploaded to a tvm.rpc server and timed by the remote time_evaluator."""
    from tvm import rpc

    from portable.tune.measure import MeasureOptions, Measurer

    server = rpc.Server(host="127.0.0.1", port=9190, port_end=9390)
    try:
        with Measurer(MeasureOptions(timeout_s=60, repeat=2, min_repeat_ms=1),
                      rpc=("127.0.0.1", server.port)) as m:
            space = tiny_matmul_task.space()
            other = {k: v[-1] for k, v in space.items()}
            res = m.measure(tiny_matmul_task, [tiny_matmul_task.defaults(), other])
    finally:
        server.terminate()
    for r in res:
        assert r.ok and r.median_s > 0, r.error


# ------------------------------------------------------------------------------------------ logs


def _rec(workload: str, secs: float | None, knobs: dict[str, Any], verified: bool = True,
         error: str | None = None, target: str = "tgt/c2", family: str = "matmul",
         shape: list[list[int]] | None = None) -> Any:
    from portable.tune.records import make_record

    return make_record(workload, family, target, knobs, median_s=secs, std_s=0.0 if secs else None,
                       verified=verified, error=error, shape=shape or [[4, 4], [4, 4], [4, 4]],
                       dtypes=["float32"] * 3)


def test_best_ranks_a_repeatedly_measured_point_by_its_median(tmp_path: Any) -> None:
    """A point whose one fast sample was not reproduced loses to a point that is steadily faster;
    prune keeps every measurement of the kept points."""
    from portable.tune.records import best, load_records, prune, write_records

    lucky, steady = {"mr": 4}, {"mr": 8}
    recs = [_rec("w", 1.0, lucky), _rec("w", 2.0, steady), _rec("w", 5.0, lucky), _rec("w", 2.2, steady),
            _rec("w", 6.0, lucky)]
    (winner,) = best(recs).values()
    assert winner.knobs == steady and winner.median_s == pytest.approx(2.1)
    path = str(tmp_path / "l.jsonl")
    write_records(path, recs)
    assert prune(path, keep=1) == 2
    assert {r.median_s for r in load_records(path)} == {2.0, 2.2}


def test_prune_keeps_the_point_best_picks(tmp_path: Any) -> None:
    """A re-measured point beats a single lucky sample in best, and prune keeps that same point."""
    from portable.tune.records import best, load_records, prune, write_records

    recs = [_rec("w", 1.0, {"mr": 4}), _rec("w", 2.0, {"mr": 8}), _rec("w", 2.2, {"mr": 8})]
    (winner,) = best(recs).values()
    path = str(tmp_path / "l.jsonl")
    write_records(path, recs)
    assert prune(path, keep=1) == 2
    assert {r.knobs["mr"] for r in load_records(path)} == {winner.knobs["mr"]} == {8}


def test_log_append_truncated_line_merge_prune_best(tmp_path: Any) -> None:
    """Appends survive a torn last line; merge dedupes; prune and best keep the fastest verified."""
    from portable.tune.records import (append_record, best, load_records, logs_digest, merge, prune,
                                       write_records)

    log = str(tmp_path / "a.jsonl")
    r1 = _rec("w1", 3e-3, {"t": 1})
    r2 = _rec("w1", 1e-3, {"t": 2})
    r3 = _rec("w1", 1e-4, {"t": 3}, verified=False)  # faster but wrong: never best
    r4 = _rec("w1", None, {"t": 4}, verified=False, error="crash: signal SIGSEGV")
    r5 = _rec("w2", 2e-3, {"t": 1})
    for r in (r1, r2, r3, r4):
        append_record(log, r)
    d0 = logs_digest([log])
    with open(log, "ab") as f:  # a writer killed mid-line
        f.write(r5.to_json().encode()[:25])
    assert logs_digest([log]) != d0
    with pytest.warns(UserWarning, match="truncated last line"):
        assert [r.knobs for r in load_records(log)] == [{"t": 1}, {"t": 2}, {"t": 3}, {"t": 4}]
    append_record(log, r5)  # must start on a fresh line
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        loaded = load_records(log)
    assert [(r.workload, r.knobs) for r in loaded][-1] == ("w2", {"t": 1})
    assert len(loaded) == 5 and any("garbled" in str(w.message) for w in caught)

    b = best(loaded)
    assert b[("w1", "tgt/c2")].knobs == {"t": 2} and b[("w2", "tgt/c2")].knobs == {"t": 1}

    other = str(tmp_path / "b.jsonl")
    r6 = _rec("w2", 5e-4, {"t": 7})
    write_records(other, [r1, r6])  # r1 duplicates a record of the first log
    out = str(tmp_path / "merged.jsonl")
    with pytest.warns(UserWarning):
        assert merge([log, other], out) == 6
    assert prune(out, keep=1) == 2
    kept = {r.workload: r for r in load_records(out)}
    assert kept["w1"].knobs == {"t": 2} and kept["w2"].knobs == {"t": 7}


def test_logs_cli_show_best_merge_prune(tmp_path: Any, capsys: Any) -> None:
    """``portable logs`` subcommands print and rewrite logs."""
    from portable.tune.cli import add_commands
    from portable.tune.records import load_records, write_records

    import argparse

    parser = argparse.ArgumentParser()
    add_commands(parser.add_subparsers(dest="command"))
    a, b = str(tmp_path / "a.jsonl"), str(tmp_path / "b.jsonl")
    write_records(a, [_rec("w1", 3e-3, {"t": 1}), _rec("w1", 1e-3, {"t": 2})])
    write_records(b, [_rec("w9", 2e-3, {"t": 5})])
    args = parser.parse_args(["logs", "best", a, b])
    assert args.fn(args) == 0
    shown = capsys.readouterr().out
    assert "w1" in shown and "w9" in shown and '"t":2' in shown and '"t":1' not in shown
    out = str(tmp_path / "m.jsonl")
    args = parser.parse_args(["logs", "merge", a, b, "--out", out])
    assert args.fn(args) == 0 and len(load_records(out)) == 3
    args = parser.parse_args(["logs", "prune", out])
    assert args.fn(args) == 0 and sorted(r.median_s for r in load_records(out)) == [1e-3, 2e-3]


# ---------------------------------------------------------------------------------- knob lookup


def _space_point(space: dict[str, list[Any]], pick: int, *others: dict[str, list[Any]]) -> dict[str, Any]:
    """A deterministic point valid in ``space`` and every space of ``others``: the ``pick``-th common value."""
    point = {}
    for k, values in space.items():
        common = [v for v in values if all(v in o.get(k, []) for o in others)]
        assert common, f"knob {k} has no value common to the spaces"
        point[k] = common[pick % len(common)]
    return point


def test_ranking_reads_only_the_newest_cache_protocol_of_a_kernel(tmp_path: Any, monkeypatch: Any) -> None:
    """Times under different cache protocols do not compare: once a kernel is re-tuned under another
    protocol, its ranking (compile, best, prune) uses only that protocol's records; a kernel logged
    under one protocol (records from before the field count as cold) keeps all of them; resume
    re-measures points logged under another protocol."""
    import dataclasses

    from portable.tune.measure import MeasureOptions, Measurer
    from portable.tune.records import best, cache_protocol, load_records, write_records
    from portable.tune.scheduler import TaskScheduler
    from portable.tune.tasks import kernel_task

    def at(rec: Any, t: float, cache: str) -> Any:
        return dataclasses.replace(rec, timestamp=t, cache=cache)

    old_a, old_b = at(_rec("w", 1e-3, {"t": 1}), 1.0, ""), at(_rec("w", 3e-3, {"t": 2}), 2.0, "")
    hot_b = at(_rec("w", 2e-3, {"t": 2}), 3.0, "hot")
    assert cache_protocol(old_a) == "cold"
    assert best([old_a, old_b])[("w", "tgt/c2")].knobs == {"t": 1}
    assert best([old_a, old_b, hot_b])[("w", "tgt/c2")].knobs == {"t": 2}
    assert best([old_a, old_b, hot_b, at(_rec("w", 9e-3, {"t": 1}), 4.0, "cold")])[("w", "tgt/c2")].knobs == {"t": 1}

    monkeypatch.setenv("PORTABLE_TUNING_DIR", str(tmp_path / "user"))
    task = kernel_task("matmul", "32x24x16")
    log = str(tmp_path / "l.jsonl")
    write_records(log, [at(_rec(task.workload, 1e-3, task.defaults(), target=task.target.key, shape=task.shape), 1.0, "")])
    assert [r.cache for r in load_records(log)] == [""]
    for cache, resumed in (("cold", 1), ("hot", 0)):
        with Measurer(MeasureOptions(cache=cache)) as measurer:  # starts no worker: nothing is measured
            sched = TaskScheduler([task], measurer, log, trials=0, progress=False)
            sched._resume()
        assert sched.states[0].resumed == resumed, cache


def test_lookup_exact_then_transfer_then_none(tmp_path: Any) -> None:
    """Exact best record wins; an untuned shape takes the nearest valid tuned shape; else None."""
    import portable
    from portable.compiler.lower import lower_group
    from portable.compiler.fuse import fuse
    from portable.tune.records import default_knob_lookup, func_signature, write_records
    from portable.tune.tasks import kernel_task, matmul_graph

    t64 = kernel_task("matmul", "64x64x64")
    t16 = kernel_task("matmul", "16x16x16")
    space = t64.space()
    if sum(len(v) > 1 for v in space.values()) == 0:
        pytest.skip("matmul template has no knobs")
    s72, s20 = kernel_task("matmul", "72x64x64").space(), kernel_task("matmul", "20x16x16").space()
    k_slow, k_fast = _space_point(space, 1, s72), _space_point(space, 2, s72)
    k_far = _space_point(t16.space(), 3, s20, s72)
    key = t64.target.key
    log = str(tmp_path / "logs.jsonl")
    write_records(log, [
        _rec(t64.workload, 2e-3, k_slow, target=key, shape=t64.shape),
        _rec(t64.workload, 1e-3, k_fast, target=key, shape=t64.shape),
        _rec(t64.workload, 1e-5, _space_point(space, 4), verified=False, target=key, shape=t64.shape),
        _rec(t16.workload, 1e-3, k_far, target=key, shape=t16.shape),
        _rec(t64.workload, 1e-6, _space_point(space, 5), target="other/c2", shape=t64.shape),
    ])
    lookup = default_knob_lookup([log])

    def kernel_of(spec: str) -> Any:
        g = matmul_graph(spec)
        return lower_group(g, fuse(g)[0], 0)

    tgt = t64.target
    assert lookup(kernel_of("64x64x64"), tgt) == k_fast
    k72 = kernel_of("72x64x64")  # nearest tuned shape: 64^3 (not 16^3)
    assert func_signature(k72.func)[0] == [[72, 64], [64, 64], [72, 64]]
    assert lookup(k72, tgt) == k_fast
    assert lookup(kernel_of("20x16x16"), tgt) == k_far
    assert lookup(kernel_of("64x64x64"), portable.targets.resolve_target("x86-avx512")) is None
    assert default_knob_lookup([str(tmp_path / "none.jsonl")])(kernel_of("64x64x64"), tgt) is None
    # a record whose knob value is not a point of this kernel's space is never transferred
    bad = dict(k_fast)
    bad[next(iter(bad))] = "no-such-value"
    write_records(log, [_rec(t64.workload, 1e-3, bad, target=key, shape=t64.shape),
                        _rec(t16.workload, 1e-3, k_far, target=key, shape=t16.shape)])
    assert default_knob_lookup([log])(k72, tgt) == k_far


def test_lookup_reads_sibling_targets_of_the_same_cpu(tmp_path: Any) -> None:
    """Records of the same CPU with another core count serve a target without its own: the nearest
    core count first, knob values outside this space left at the default; the own target's best
    record that is a point of the space, and nothing of another CPU, wins; the compiled kernel still
    computes the product."""
    from portable.compiler.build import compile_graph
    from portable.compiler.fuse import fuse
    from portable.compiler.lower import lower_group
    from portable.tune.records import default_knob_lookup, split_target_key, write_records
    from portable.tune.tasks import kernel_task, matmul_graph

    task = kernel_task("matmul", "64x64x64")
    space = task.space()
    tunable = [k for k, v in space.items() if len(v) > 1]
    if len(tunable) < 2:
        pytest.skip("matmul template has fewer than two knobs")
    tgt = task.target
    base, cores = split_target_key(tgt.key)
    assert base and cores == tgt.num_cores
    near, far, mine = _space_point(space, 1), _space_point(space, 2), _space_point(space, 3)
    assert near != far
    g = matmul_graph("64x64x64")
    kernel = lower_group(g, fuse(g)[0], 0)
    log = str(tmp_path / "l.jsonl")

    def lookup_with(*records: Any) -> Any:
        write_records(log, records)
        return default_knob_lookup([log])(kernel, tgt)

    def rec(knobs: dict[str, Any], target: str, t: float = 1e-3) -> Any:
        return _rec(task.workload, t, knobs, target=target, shape=task.shape)

    assert lookup_with(rec(far, f"{base}/c{cores * 64}"), rec(near, f"{base}/c{cores * 4}")) == near
    assert lookup_with(rec(near, f"{base}x/c{cores}", 1e-6), rec(far, f"{base}/c{cores * 4}")) == far
    assert lookup_with(rec(near, f"{base}x/c{cores}")) is None  # another CPU is never read
    assert lookup_with(rec(far, f"{base}/c{cores * 4}", 1e-6), rec(mine, tgt.key)) == mine
    dropped = tunable[0]
    bad = {**near, dropped: "no-such-value"}
    partial = lookup_with(rec(bad, f"{base}/c{cores * 4}"))
    assert partial == {k: v for k, v in near.items() if k != dropped}

    exe = compile_graph(g, tgt, knob_lookup=default_knob_lookup([log]))
    (used,) = [k["knobs"] for k in exe.plan.kernels.values()]
    assert {k: used[k] for k in partial} == partial
    a = np.random.default_rng(1).standard_normal((64, 64)).astype(np.float32)
    np.testing.assert_allclose(exe.run(a)[0], a @ g.constants["B"], rtol=1e-4, atol=1e-4)
    # the own best point that the space no longer offers gives way to the own next best, not a sibling's
    assert lookup_with(rec(bad, tgt.key, 1e-6), rec(mine, tgt.key), rec(far, f"{base}/c{cores * 4}", 1e-7)) == mine


def test_tuning_a_new_core_count_starts_from_the_sibling_targets_best(tmp_path: Any) -> None:
    """A task with no record on its own target but one on a sibling measures that point (filled up
    with the defaults) right after the default, before any random one; with its own record, no seed."""
    from portable.tune.records import load_database, split_target_key, write_records
    from portable.tune.scheduler import _logged_seeds
    from portable.tune.search import TaskSearch
    from portable.tune.tasks import kernel_task

    task = kernel_task("matmul", "64x64x64")
    space, defaults = task.space(), task.defaults()
    tunable = [k for k, v in space.items() if len(v) > 1]
    if not tunable:
        pytest.skip("matmul template has no knobs")
    base, cores = split_target_key(task.target.key)
    point = {k: next((v for v in space[k] if v != defaults[k]), defaults[k]) for k in space}
    logged = {k: point[k] for k in tunable[:1]}  # a record written when the template had one knob
    log = str(tmp_path / "l.jsonl")
    write_records(log, [_rec(task.workload, 1e-3, logged, target=f"{base}/c{cores * 8}", shape=task.shape)])
    seeds = _logged_seeds(task, space, defaults, load_database([log]))
    assert seeds == [task.template().with_logged(defaults, logged)]
    assert seeds[0][tunable[0]] == point[tunable[0]] and set(seeds[0]) == set(space)
    first = TaskSearch(space, defaults, seeds=seeds).propose(4)
    assert first[:2] == [defaults, seeds[0]]
    write_records(log, [_rec(task.workload, 1e-3, defaults, target=task.target.key, shape=task.shape)])
    assert _logged_seeds(task, space, defaults, load_database([log])) == [defaults]  # its own record: resumed, not re-measured
    assert _logged_seeds(task, space, defaults, load_database([str(tmp_path / "none.jsonl")])) == []


# -------------------------------------------------------------------------------------- end to end


def test_tune_tiny_matmul_end_to_end_then_compile_uses_best(tmp_path: Any, monkeypatch: Any) -> None:
    """Tune a tiny matmul, resume without re-measuring, and compile with the best logged knobs."""
    import portable
    from portable.tune import tune_kernel
    from portable.tune.measure import MeasureOptions
    from portable.tune.records import best as best_records
    from portable.tune.records import knob_id, load_records

    monkeypatch.setenv("PORTABLE_TUNING_DIR", str(tmp_path / "user"))
    log = str(tmp_path / "user" / "tuning.jsonl")
    opts = MeasureOptions(repeat=3, min_repeat_ms=2, timeout_s=60)
    s1 = tune_kernel("matmul", "32x24x16", trials=6, batch_size=3, log=log, progress=False, options=opts)
    assert s1["trials"] == 6
    (t,) = s1["tasks"]
    assert t["default_s"] and t["best_s"] and t["best_s"] <= t["default_s"]
    s2 = tune_kernel("matmul", "32x24x16", trials=3, batch_size=3, log=log, progress=False, options=opts)
    assert s2["tasks"][0]["resumed"] == 6
    recs = load_records(log)
    # 9 distinct trials; each run then re-measures its (at most 3) leaders and the default once more
    assert len({knob_id(r.knobs) for r in recs}) == 9, "the search proposed a point twice"
    assert 9 < len(recs) <= 9 + 2 * 4
    assert all(r.verified for r in recs), [r.error for r in recs]
    (best,) = best_records(recs).values()

    a = np.random.default_rng(1).standard_normal((32, 16)).astype(np.float32)
    b = np.random.default_rng(2).standard_normal((16, 24)).astype(np.float32)
    model = make_model([helper.make_node("MatMul", ["a", "b"], ["y"])], {"a": a}, ["y"], {"b": b})
    exe = portable.compile(model, cache=False)
    used = [k["knobs"] for k in exe.plan.kernels.values() if k["workload"] == best.workload]
    assert used == [best.knobs]
    np.testing.assert_allclose(exe.run(a=a)[0], a @ b, rtol=1e-4, atol=1e-4)


def test_resume_merges_a_record_logged_before_a_knob_existed(tiny_matmul_task: Any, tmp_path: Any) -> None:
    """A record lacking a knob stands for the point with that knob at its default: on resume it is the
    same point as the full record (one point, seen once), not a second candidate to re-measure."""
    from portable.tune.records import write_records
    from portable.tune.scheduler import TaskScheduler

    task = tiny_matmul_task
    full = task.defaults()
    partial = {k: v for k, v in full.items() if k != "b_panels"}
    other = {**full, "mr": 4}
    recs = [_rec(task.workload, t, k, target=task.target.key) for t, k in ((1e-5, full), (2e-5, partial), (3e-5, other))]
    log = str(tmp_path / "l.jsonl")
    write_records(log, recs)
    sched = TaskScheduler([task], log_path=log, trials=0, confirm=0, progress=False)
    sched._resume()
    (st,) = sched.states
    assert st.resumed == 2 and len(st.samples) == 2
    assert st.default_s == pytest.approx(1e-5)


def test_tasks_of_a_model_are_weighted_by_occurrence() -> None:
    """Two identical matmuls in a model are one task of weight 2; workload keys match the compiler's."""
    from portable.tune.tasks import extract_tasks

    rng = np.random.default_rng(0)
    x = rng.standard_normal((8, 16)).astype(np.float32)
    w1, w2 = (rng.standard_normal((16, 16)).astype(np.float32) for _ in range(2))
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["h"]), helper.make_node("MatMul", ["h", "w2"], ["y"])]
    model = make_model(nodes, {"x": x}, ["y"], {"w1": w1, "w2": w2})
    tasks = extract_tasks(model, "host")
    mm = [t for t in tasks if t.family == "matmul"]
    assert len(mm) == 1 and mm[0].weight == 2 and mm[0].flops == pytest.approx(2 * 8 * 16 * 16, rel=0.5)
    import portable

    exe = portable.compile(model, cache=False)
    assert mm[0].workload in {k["workload"] for k in exe.plan.kernels.values()}


def test_tune_and_logs_commands(tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    """`portable tune --kernel ... --trials` writes verified records; `portable logs best` shows them."""
    from portable.cli import main as cli_main
    from portable.tune.records import knob_id, load_all

    log = str(tmp_path / "k.jsonl")
    assert cli_main(["tune", "--kernel", "matmul", "--shape", "64x64x64", "--trials", "3", "--log", log,
                     "--no-progress"]) == 0
    recs = load_all([log])
    assert len({knob_id(r.knobs) for r in recs}) == 3 and any(r.verified for r in recs)  # + the re-measured leaders
    # --trials 0: no new candidate; --confirm 1: the fastest point and the default measured once more
    assert cli_main(["tune", "--kernel", "matmul", "--shape", "64x64x64", "--trials", "0", "--confirm", "1",
                     "--log", log, "--no-progress"]) == 0
    again = load_all([log])
    assert {knob_id(r.knobs) for r in again} == {knob_id(r.knobs) for r in recs}
    assert 1 <= len(again) - len(recs) <= 2
    capsys.readouterr()
    assert cli_main(["logs", "best", log]) == 0
    assert "matmul" in capsys.readouterr().out
