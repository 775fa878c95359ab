"""Cost model: an xgboost regressor from knob features to (log) throughput, one per task.

Features of a knob assignment: per knob its position in the space list, its numeric value and
log2 value (booleans as 0/1, strings one-hot), plus derived products of the integer knobs (log2
of the product of all of them and of every pair: tile areas and volumes). The target is
``-log(seconds)`` so the model ranks candidates; failed candidates are given a score below the
worst success so the search learns to avoid their region.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np


class FeatureEncoder:
    """Turns knob assignments of one space into fixed-length numeric vectors."""

    def __init__(self, space: dict[str, list[Any]]):
        """Remember the space's knob order and value lists."""
        self.space = space
        self.names = sorted(space)
        self.numeric = [n for n in self.names if all(_is_number(v) for v in space[n])]
        self.integer = [n for n in self.numeric if all(isinstance(v, int) and not isinstance(v, bool)
                                                       for v in space[n]) and len(space[n]) > 1]

    def encode_one(self, knobs: dict[str, Any]) -> list[float]:
        """Feature vector of one assignment."""
        feats: list[float] = []
        for n in self.names:
            values = self.space[n]
            v = knobs.get(n, values[0])
            idx = next((i for i, c in enumerate(values) if c == v and type(c) is type(v)), -1)
            feats.append(float(idx))
            if n in self.numeric:
                x = float(v)
                feats += [x, math.log2(x) if x > 0 else -1.0]
            else:
                feats += [1.0 if c == v else 0.0 for c in values]
        ints = [math.log2(max(float(knobs.get(n, self.space[n][0])), 1.0)) for n in self.integer]
        if ints:
            feats.append(sum(ints))
            feats += [ints[i] + ints[j] for i in range(len(ints)) for j in range(i + 1, len(ints))]
        return feats

    def encode(self, points: list[dict[str, Any]]) -> np.ndarray:
        """Feature matrix of several assignments."""
        return np.asarray([self.encode_one(p) for p in points], dtype=np.float32)


def _is_number(v: Any) -> bool:
    return isinstance(v, (bool, int, float)) and not (isinstance(v, float) and not math.isfinite(v))


class CostModel:
    """Per-task xgboost regressor predicting a score (higher is faster)."""

    def __init__(self, space: dict[str, list[Any]], seed: int = 0, min_samples: int = 4):
        """An untrained model for ``space``; it predicts 0 until ``min_samples`` points are seen."""
        self.encoder = FeatureEncoder(space)
        self.seed = seed
        self.min_samples = min_samples
        self._model: Any = None

    @property
    def trained(self) -> bool:
        """True once fitted."""
        return self._model is not None

    def fit(self, points: list[dict[str, Any]], seconds: list[float | None]) -> None:
        """Train on measured points; ``None`` seconds mark failed candidates."""
        good = [s for s in seconds if s is not None and s > 0]
        if len(good) < self.min_samples:
            return
        scores = np.array([-math.log(s) if s is not None and s > 0 else math.nan for s in seconds])
        best, worst = float(np.nanmax(scores)), float(np.nanmin(scores))
        scores = np.where(np.isnan(scores), worst - max(0.5, 0.25 * (best - worst)), scores) - best
        import xgboost as xgb

        params = {"max_depth": 4, "eta": 0.2, "subsample": 0.9, "min_child_weight": 1.0, "seed": self.seed,
                  "nthread": 1, "verbosity": 0, "objective": "reg:squarederror"}
        data = xgb.DMatrix(self.encoder.encode(points), label=scores)
        self._model = xgb.train(params, data, num_boost_round=60)

    def predict(self, points: list[dict[str, Any]]) -> np.ndarray:
        """Predicted scores (higher is faster); zeros when untrained."""
        if not points:
            return np.zeros(0)
        if self._model is None:
            return np.zeros(len(points))
        import xgboost as xgb

        return np.asarray(self._model.predict(xgb.DMatrix(self.encoder.encode(points))), dtype=np.float64)
