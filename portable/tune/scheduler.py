"""Allocating trials across the tasks of a model (Ansor-style gradient task scheduler).

Every task first gets one warm-up batch (heaviest first). After that each batch goes to the task
with the largest expected reduction of the model's total latency ``sum(weight * best_time)``:
weight x (a mix of the task's recent improvement per trial and an optimistic ``best / trials``
term, so a task that has had few trials keeps being tried). Exhausted tasks drop out. The budget is
a number of trials, a number of seconds, or both (whichever ends first). Finally each task's three
fastest points and its default are measured once more (the last 10% of a time budget), and the
compiler ranks points by the median of their measurements, so a lucky sample does not win. With
``resume`` the records already in the logs seed each task's search and are never measured again,
and a task without records of its own on this target first measures the point the compiler would
take from the logs (a sibling target's best or a transferred shape's, see ``TuningDatabase``).
"""

from __future__ import annotations

import logging
import statistics
import time
from dataclasses import dataclass, field
from typing import Any

from .measure import MeasureError, Measurer, MeasureResult
from .records import (Record, TuningDatabase, append_record, cache_protocol, default_user_log, load_all, load_records,
                      log_files)
from .search import TaskSearch
from .tasks import Task

log = logging.getLogger("portable.tune")

#: share of a time budget kept for re-measuring each task's leaders at the end
CONFIRM_SHARE = 0.1


def _logged_seeds(task: Task, space: dict[str, list[Any]], defaults: dict[str, Any] | None,
                  db: TuningDatabase) -> list[dict[str, Any]]:
    """The point the compiler would take from the logs for ``task`` (knob ``space``, template
    ``defaults``), to be measured first. Its own best record on this target is resumed anyway;
    without one this is a sibling target's best or a transferred shape's, so on a new machine of a
    known CPU the search starts from the shipped logs."""
    if not db.knows(task.family, task.target.key):
        return []
    knobs = db.choose(task.workload, task.family, task.target.key, space, task.shape, task.dtypes)
    return [task.template().with_logged(defaults or {}, knobs)] if knobs else []


@dataclass
class TaskState:
    """Progress of one task."""

    task: Task
    search: TaskSearch
    trials: int = 0  # measured in this run
    failures: int = 0
    resumed: int = 0
    default_s: float | None = None
    best_s: float | None = None
    best_knobs: dict[str, Any] | None = None
    history: list[float] = field(default_factory=list)  # best-so-far seconds after each trial of this run
    samples: dict[str, list[float]] = field(default_factory=dict)  # knob id -> every time measured
    knobs_of: dict[str, dict[str, Any]] = field(default_factory=dict)
    error: str | None = None  # the task could not be measured at all
    bar: Any = None

    @property
    def active(self) -> bool:
        """True while the task can still be given trials."""
        return self.error is None and not self.search.exhausted

    def observe(self, knobs: dict[str, Any], seconds: float | None, is_default: bool) -> None:
        """Account for one measured (or resumed) point."""
        if not self.search.seen(knobs):
            self.search.add(knobs, seconds)
        if seconds is not None:
            kid = _kid(knobs)
            self.samples.setdefault(kid, []).append(seconds)
            self.knobs_of[kid] = dict(knobs)
            if is_default and (self.default_s is None or seconds < self.default_s):
                self.default_s = seconds
            if self.best_s is None or seconds < self.best_s:
                self.best_s, self.best_knobs = seconds, dict(knobs)


def parse_budget(budget: str | float | int | None) -> float | None:
    """Seconds from ``"15m"``, ``"90s"``, ``"1.5h"`` or a number of seconds."""
    if budget is None or isinstance(budget, (int, float)):
        return None if budget is None else float(budget)
    text = str(budget).strip().lower()
    units = {"s": 1, "m": 60, "h": 3600}
    try:
        if text and text[-1] in units:
            return float(text[:-1]) * units[text[-1]]
        return float(text)
    except ValueError:
        from ..errors import PortableError

        raise PortableError(f"budget {budget!r}: expected seconds or a duration like 90s, 15m, 1h") from None


class TaskScheduler:
    """Runs the tuning loop over several tasks and writes every measurement to a log."""

    def __init__(self, tasks: list[Task], measurer: Measurer | None = None, log_path: str | None = None,
                 trials: int | None = None, budget_s: float | None = None, batch_size: int = 8,
                 resume: bool = True, seed: int = 0, progress: bool = True, alpha: float = 0.2,
                 confirm: int = 3):
        """``trials`` and ``budget_s`` bound the run (default: 32 trials per task); ``confirm``
        leaders per task are re-measured at the end (within the last 10% of a time budget)."""
        self.tasks = tasks
        self.measurer = measurer or Measurer()
        self.own_measurer = measurer is None
        self.log_path = log_path or default_user_log()
        self.trials = trials if trials is not None or budget_s is not None else 32 * max(1, len(tasks))
        self.budget_s = budget_s
        self.batch_size = batch_size
        self.resume = resume
        self.progress = progress
        self.alpha = alpha
        self.confirm = confirm
        self.states = [TaskState(t, TaskSearch(t.space(), t.defaults(), seed=seed + i)) for i, t in enumerate(tasks)]
        self.used = 0
        self.curve: list[tuple[int, float, float]] = []  # (trial, elapsed s, weighted best total)

    # ------------------------------------------------------------------------------------ resume
    def _resume(self) -> None:
        """Observe every logged measurement of each task's kernel on its target, and seed each search
        with the point the logs suggest (``_logged_seeds``); the logs are read once, here."""
        if not self.resume:
            return
        records = load_all(list(dict.fromkeys([*log_files(), self.log_path])))
        db = TuningDatabase(records)
        protocol = self.measurer.options.cache
        # times under another cache protocol do not compare with this run's: those points are measured again
        records = [r for r in records if cache_protocol(r) == protocol]
        for st in self.states:
            t = st.task
            defaults_id = _kid(st.search.defaults)
            template = t.template()
            for r in records:
                if r.workload != t.workload or r.target != t.target.key:
                    continue
                # the whole point a record stands for: one logged before a knob existed lacks it, and
                # is the same schedule as the point with that knob's value filled in
                knobs = template.with_logged(st.search.defaults, r.knobs)
                if not st.search.seen(knobs):
                    st.observe(knobs, r.median_s if r.ok else None, _kid(knobs) == defaults_id)
                    st.resumed += 1
            st.search.seeds = _logged_seeds(t, st.search.space, st.search.defaults, db)

    # -------------------------------------------------------------------------------------- loop
    def run(self) -> dict[str, Any]:
        """Tune until the budget is spent or every task is exhausted, then confirm the leaders;
        returns the summary."""
        start = time.monotonic()
        self._resume()
        self._open_bars()
        search_budget = self.budget_s * (1 - CONFIRM_SHARE) if self.budget_s and self.confirm else self.budget_s
        try:
            order = sorted(self.states, key=lambda s: -s.task.weight * max(s.task.flops, 1.0))
            for st in order:  # warm-up round
                if self._out_of_budget(start, search_budget):
                    break
                self._step(st, start)
            while not self._out_of_budget(start, search_budget):
                st = self._pick()
                if st is None:
                    break
                self._step(st, start)
            for st in order:
                if self.budget_s is not None and time.monotonic() - start >= self.budget_s:
                    break
                self._confirm(st)
        finally:
            self._close_bars()
            if self.own_measurer:
                self.measurer.close()
        return self.summary(time.monotonic() - start)

    def _out_of_budget(self, start: float, budget_s: float | None) -> bool:
        if self.trials is not None and self.used >= self.trials:
            return True
        return budget_s is not None and time.monotonic() - start >= budget_s

    def _confirm(self, st: TaskState) -> None:
        """Measure the task's ``confirm`` fastest points and its default once more (all in one batch).

        On a shared machine a single sample can be several times too fast or too slow; picking the
        minimum over many candidates then favours lucky samples. Records of a point are combined by
        their median when the compiler picks the best (``records.best``), so a lucky leader that is
        slow on re-measurement loses its place. These measurements are logged but are not trials.
        """
        if not self.confirm or st.error is not None or len(st.samples) < 2:
            return
        ranked = sorted(st.samples, key=lambda k: min(st.samples[k]))[: self.confirm]
        default_id = _kid(st.search.defaults)
        if default_id in st.samples and default_id not in ranked:
            ranked.append(default_id)
        cands = [st.knobs_of[k] for k in ranked]
        try:
            results = self.measurer.measure(st.task, cands)
        except MeasureError as exc:
            log.warning("could not confirm %s: %s", st.task.name, exc)
            return
        for res in results:
            append_record(self.log_path, res.to_record(st.task, self.measurer.options.cache))
            if res.ok:
                st.samples[_kid(res.knobs)].append(res.median_s)  # type: ignore[arg-type]
        med = {k: statistics.median(v) for k, v in st.samples.items() if k in ranked}
        winner = min(med, key=med.get)  # type: ignore[arg-type]
        st.best_s, st.best_knobs = med[winner], dict(st.knobs_of[winner])
        if default_id in med:
            st.default_s = med[default_id]

    def _pick(self) -> TaskState | None:
        active = [s for s in self.states if s.active]
        if not active:
            return None
        return max(active, key=self._gain)

    def _gain(self, st: TaskState) -> float:
        """Expected reduction of weighted latency per trial given to this task."""
        best = st.best_s if st.best_s is not None else 1.0
        n = max(1, len(st.search.measured))
        hist = st.history
        window = min(len(hist) - 1, self.batch_size * 2)
        backward = (hist[-1 - window] - hist[-1]) / window if window > 0 else best
        forward = best / n
        return st.task.weight * (self.alpha * backward + (1 - self.alpha) * forward)

    def _step(self, st: TaskState, start: float) -> None:
        n = self.batch_size
        if self.trials is not None:
            n = min(n, self.trials - self.used)
        cands = st.search.propose(n) if n > 0 else []
        if not cands:
            return
        defaults_id = _kid(st.search.defaults)
        try:
            self.measurer.measure(st.task, cands,
                                  on_result=lambda res: self._record(st, res, _kid(res.knobs) == defaults_id))
        except MeasureError as exc:
            st.error = str(exc)
            log.warning("skipping task %s: %s", st.task.name, exc)
            return
        self.curve.append((self.used, time.monotonic() - start, self.weighted_best()))

    def _record(self, st: TaskState, res: MeasureResult, is_default: bool) -> None:
        append_record(self.log_path, res.to_record(st.task, self.measurer.options.cache))
        st.observe(res.knobs, res.median_s if res.ok else None, is_default)
        st.trials += 1
        st.failures += 0 if res.ok else 1
        self.used += 1
        if st.best_s is not None:
            st.history.append(st.best_s)
        if res.error:
            log.info("%s: candidate %s failed: %s", st.task.name, res.knobs, res.error)
        if st.bar is not None:
            st.bar.update(1)
            if st.best_s:
                gflops = st.task.flops / st.best_s / 1e9 if st.task.flops else 0.0
                st.bar.set_postfix_str(f"best {st.best_s * 1e3:.3f} ms {gflops:.1f} GFLOPS fail {st.failures}")

    def weighted_best(self) -> float:
        """sum(weight x best time) over tasks with a measurement (seconds)."""
        return sum(s.task.weight * s.best_s for s in self.states if s.best_s is not None)

    # --------------------------------------------------------------------------------- progress
    def _open_bars(self) -> None:
        if not self.progress:
            return
        from tqdm import tqdm

        for i, st in enumerate(self.states):
            st.bar = tqdm(total=st.search.size, initial=len(st.search.measured), desc=st.task.name[:40],
                          position=i, leave=True, unit="trial", dynamic_ncols=True)

    def _close_bars(self) -> None:
        for st in self.states:
            if st.bar is not None:
                st.bar.close()
                st.bar = None

    # ---------------------------------------------------------------------------------- summary
    def summary(self, elapsed: float) -> dict[str, Any]:
        """What was tuned, how much faster it got, and where the records went."""
        tasks = []
        for st in self.states:
            t = st.task
            tasks.append({
                "name": t.name, "workload": t.workload, "family": t.family, "weight": t.weight, "flops": t.flops,
                "trials": st.trials, "failures": st.failures, "resumed": st.resumed,
                "space_size": st.search.size, "default_s": st.default_s, "best_s": st.best_s,
                "speedup": (st.default_s / st.best_s) if st.default_s and st.best_s else None,
                "gflops": (t.flops / st.best_s / 1e9) if st.best_s and t.flops else None,
                "best_knobs": st.best_knobs, "history": list(st.history), "error": st.error})
        # both totals over the kernels with both times (one whose default was never timed would
        # count in the best total only: a 0.2 ms default total against a 3.3 ms best one)
        both = [s for s in self.states if s.default_s is not None and s.best_s is not None]
        default_total = sum(s.task.weight * s.default_s for s in both)  # type: ignore[operator]
        best_total = sum(s.task.weight * s.best_s for s in both)  # type: ignore[operator]
        return {"target": self.states[0].task.target.key if self.states else None, "trials": self.used,
                "elapsed_s": elapsed, "log": self.log_path, "tasks": tasks,
                "default_total_s": default_total, "best_total_s": best_total,
                "compared_kernels": len(both),
                "speedup": default_total / best_total if default_total and best_total else None,
                "curve": self.curve}


def _kid(knobs: dict[str, Any] | None) -> str:
    from .records import knob_id

    return knob_id(knobs or {})


def records_for(task: Task, paths: list[str]) -> list[Record]:
    """Records of ``task`` (same workload and target) in the given logs."""
    out = []
    for p in paths:
        out += [r for r in load_records(p) if r.workload == task.workload and r.target == task.target.key]
    return out


