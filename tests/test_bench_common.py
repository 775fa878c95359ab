"""The benchmarks' timing helpers: interleaved blocks by round and the paired ratio interval."""

from __future__ import annotations

import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks"))
from common import Timing, paired_ratio, time_interleaved  # noqa: E402


def test_paired_ratio_pairs_blocks_of_the_same_round() -> None:
    """Ratios are taken round by round (a round only one engine ran is left out): a load change that
    slows both engines in a round does not widen the interval; a real spread does."""
    drift = [1.0, 3.0, 1.5, 2.5, 1.2]
    ours = Timing.from_seconds([0.0], {r: [2e-3 * d] for r, d in enumerate(drift)})
    theirs = Timing.from_seconds([0.0], {**{r: [1e-3 * d] for r, d in enumerate(drift)}, 9: [5.0]})
    steady = paired_ratio(ours, theirs)
    assert steady["rounds"] == 5 and steady["median"] == 2.0 and steady["ci"] == [2.0, 2.0]
    noisy = Timing.from_seconds([0.0], {r: [1e-3 * d * f] for r, (d, f) in enumerate(zip(drift, [0.8, 1.2, 0.9, 1.1, 1.0]))})
    spread = paired_ratio(noisy, theirs)
    assert spread["ci"][0] < 1.0 < spread["ci"][1] and spread["median"] == 1.0
    assert paired_ratio(Timing.from_seconds([2e-3]), Timing.from_seconds([1e-3])) == {"median": 2.0, "ci": None,
                                                                                      "rounds": 0}


def test_time_interleaved_records_one_block_per_round() -> None:
    """Each engine gets one timed block per round; a block's entry is the median of its samples."""
    calls = {"a": 0, "b": 0}

    def bump(name: str):  # type: ignore[no-untyped-def]
        def fn() -> None:
            calls[name] += 1
        return fn

    t = time_interleaved({"a": bump("a"), "b": bump("b")}, repeat=6, warmup=1, rounds=3)
    assert sorted(t["a"].block_ms) == [0, 1, 2] and t["a"].repeats == 6
    # a round's entry is the median of that round's samples, in ms (given samples, not timed ones)
    blocks = {0: [1e-3, 6e-3, 2e-3], 2: [4e-3]}  # median 2 ms, mean 3 ms
    summary = Timing.from_seconds([x for b in blocks.values() for x in b], blocks)
    assert summary.block_ms == {0: 2.0, 2: 4.0} and summary.repeats == 4
    assert np.isfinite(paired_ratio(t["a"], t["b"])["median"])


def test_fma_peak_kernel_is_checked_before_it_is_timed(monkeypatch) -> None:
    """The FMA-peak kernel's sums are compared exactly with NumPy's before any timing: a kernel that
    skipped work (here: one outer step short) would report an impossible peak, so it raises instead;
    the real kernel passes the check."""
    import fma_peak
    import pytest

    fma_peak.measured_fma_peak_gflops(1, seconds=0.001, calls=1)  # raises if its sums are wrong
    real = fma_peak._build
    monkeypatch.setattr(fma_peak, "_build", lambda threads, lanes, outer, target: real(threads, lanes, outer - 1, target))
    with pytest.raises(RuntimeError, match="wrong sum"):
        fma_peak.measured_fma_peak_gflops(1, seconds=0.001, calls=1)
