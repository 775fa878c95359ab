"""End-to-end smoke tests of the spine: import, compile, run, save, load."""

import numpy as np
from conftest import check_node


def test_conv_relu(rng):
    x = rng.standard_normal((1, 3, 8, 8)).astype(np.float32)
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    check_node("Conv", {"x": x}, {"pads": [1, 1, 1, 1]}, initializers={"w": w})


def test_matmul(rng):
    a = rng.standard_normal((2, 5, 7)).astype(np.float32)
    b = rng.standard_normal((7, 3)).astype(np.float32)
    check_node("MatMul", {"a": a, "b": b})
