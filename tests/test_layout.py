"""Weight-packing rewrites: the numpy form applied to constants equals the schedule's IndexMap."""

import numpy as np
import pytest
import tvm

from schedules.layout import SplitAxisRewrite


@pytest.mark.parametrize("shape,rewrite", [
    ((32, 3, 3, 3), SplitAxisRewrite(0, 16, (0, 2, 3, 4, 1))),   # conv OIHW -> O/16 I H W 16
    ((64, 48), SplitAxisRewrite(1, 16, (1, 0, 2))),               # matmul B[K, N] -> N/16 K 16
    ((48, 64), SplitAxisRewrite(0, 8, (0, 2, 1))),                # gemm transB B[N, K] -> N/8 K 8
])
def test_numpy_rewrite_matches_index_map(shape, rewrite):
    arr = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    via_tvm = rewrite.index_map().map_tensor(tvm.runtime.tensor(arr)).numpy()
    np.testing.assert_array_equal(rewrite.apply(arr), via_tvm)
