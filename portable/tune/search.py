"""Search over one task's knob space: random warm-up, then model-ranked proposals.

After a warm-up of random points (the template default first, then the seeds: what the logs
already suggest, such as a sibling target's best point), each batch is chosen by the cost
model: small spaces are ranked exhaustively, large ones through simulated annealing over single-
knob mutations started from the best measured points. A fraction of every batch stays random
(exploration). A point that was measured -- successfully or not, in this run or in a log being
resumed -- is never proposed again.
"""

from __future__ import annotations

import math
import random
from typing import Any

from .cost_model import CostModel
from .records import knob_id

#: spaces up to this many points are ranked exhaustively instead of by annealing
ENUMERATE_LIMIT = 4096


class TaskSearch:
    """Proposal state of one task."""

    def __init__(self, space: dict[str, list[Any]], defaults: dict[str, Any] | None = None, seed: int = 0,
                 warmup: int = 8, epsilon: float = 0.2, seeds: list[dict[str, Any]] | None = None):
        """``space``: knob name -> values; ``defaults``: the template default (measured first);
        ``seeds``: whole points measured next, before any random or model-ranked one."""
        self.space = {k: list(v) for k, v in space.items()}
        self.names = list(self.space)
        self.defaults = dict(defaults) if defaults else None
        self.seeds = [dict(p) for p in seeds or []]
        self.rng = random.Random(seed)
        self.warmup = warmup
        self.epsilon = epsilon
        self.model = CostModel(self.space, seed=seed)
        self.measured: dict[str, tuple[dict[str, Any], float | None]] = {}
        self.size = math.prod(len(v) for v in self.space.values()) if self.space else 1

    # ------------------------------------------------------------------------------------- state
    def add(self, knobs: dict[str, Any], seconds: float | None) -> None:
        """Record a measured point (``None`` seconds for a failure)."""
        self.measured[knob_id(knobs)] = (dict(knobs), seconds)

    def seen(self, knobs: dict[str, Any]) -> bool:
        """True if the point was measured already."""
        return knob_id(knobs) in self.measured

    @property
    def exhausted(self) -> bool:
        """True when every point of the space was measured."""
        return len(self.measured) >= self.size

    @property
    def best(self) -> tuple[dict[str, Any], float] | None:
        """Fastest measured point and its time."""
        ok = [(k, s) for k, s in self.measured.values() if s is not None]
        return min(ok, key=lambda x: x[1]) if ok else None

    # ----------------------------------------------------------------------------------- proposals
    def propose(self, n: int) -> list[dict[str, Any]]:
        """Up to ``n`` unmeasured, distinct points to measure next."""
        out: dict[str, dict[str, Any]] = {}
        for p in ([self.defaults] if self.defaults is not None else []) + self.seeds:
            if not self.seen(p):
                out.setdefault(knob_id(p), dict(p))
        successes = sum(1 for _, s in self.measured.values() if s is not None)
        if successes + len(out) < self.warmup:
            self._add_random(out, n)
            return list(out.values())[:n]
        self._fit()
        n_model = max(1, int(round(n * (1 - self.epsilon)))) - len(out)
        for p in self._ranked(n_model):
            out.setdefault(knob_id(p), p)
        self._add_random(out, n)
        return list(out.values())[:n]

    def _fit(self) -> None:
        pts = [k for k, _ in self.measured.values()]
        secs = [s for _, s in self.measured.values()]
        self.model.fit(pts, secs)

    def _add_random(self, out: dict[str, dict[str, Any]], n: int) -> None:
        if self.size <= ENUMERATE_LIMIT:
            rest = [p for p in self._all_points() if knob_id(p) not in self.measured and knob_id(p) not in out]
            self.rng.shuffle(rest)
            for p in rest[: max(0, n - len(out))]:
                out[knob_id(p)] = p
            return
        tries = 0
        while len(out) < n and tries < 50 * n:
            tries += 1
            p = self.random_point()
            kid = knob_id(p)
            if kid not in self.measured:
                out.setdefault(kid, p)

    def random_point(self) -> dict[str, Any]:
        """A uniformly drawn point."""
        return {k: self.rng.choice(v) for k, v in self.space.items()}

    def _all_points(self) -> list[dict[str, Any]]:
        import itertools

        return [dict(zip(self.names, vals)) for vals in itertools.product(*(self.space[k] for k in self.names))]

    def _ranked(self, n: int) -> list[dict[str, Any]]:
        if n <= 0:
            return []
        if self.size <= ENUMERATE_LIMIT:
            cands = [p for p in self._all_points() if knob_id(p) not in self.measured]
        else:
            cands = self._anneal()
        if not cands:
            return []
        preds = self.model.predict(cands)
        order = sorted(range(len(cands)), key=lambda i: -preds[i])
        return [cands[i] for i in order[:n]]

    def mutate(self, p: dict[str, Any]) -> dict[str, Any]:
        """``p`` with one knob (that has alternatives) changed to another value."""
        choices = [k for k in self.names if len(self.space[k]) > 1]
        if not choices:
            return dict(p)
        k = self.rng.choice(choices)
        q = dict(p)
        q[k] = self.rng.choice([v for v in self.space[k] if not (v == p.get(k) and type(v) is type(p.get(k)))])
        return q

    def _anneal(self, population: int = 64, steps: int = 40, t0: float = 0.5) -> list[dict[str, Any]]:
        """Unmeasured points visited by simulated annealing on the model's predicted score."""
        ranked = sorted(((s, k) for k, s in self.measured.values() if s is not None), key=lambda x: x[0])
        pop = [dict(k) for _, k in ranked[: population // 2]]
        while len(pop) < population:
            pop.append(self.random_point())
        scores = self.model.predict(pop)
        visited: dict[str, dict[str, Any]] = {}
        for step in range(steps):
            temp = t0 * (1 - step / steps) + 1e-3
            mutants = [self.mutate(p) for p in pop]
            new = self.model.predict(mutants)
            for i, (q, s) in enumerate(zip(mutants, new)):
                kid = knob_id(q)
                if kid not in self.measured:
                    visited[kid] = q
                if s >= scores[i] or self.rng.random() < math.exp((s - scores[i]) / temp):
                    pop[i], scores[i] = q, s
        return list(visited.values())
