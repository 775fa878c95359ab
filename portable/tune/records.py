"""Tuning logs: one JSON line per measured candidate, and the knob lookup the compiler uses.

A record names the kernel (``workload``: the structural hash of its unscheduled PrimFunc, see
``portable.compiler.build.workload_key``), its template ``family``, the ``target`` key, the knob
values, the measured median/std seconds, whether the candidate's output matched the reference
(``verified``) or why it failed (``error``), and the kernel's parameter shapes (``shape``), which
let a tuned shape's knobs be transferred to a nearby untuned shape of the same family.

Logs are read from the repository's ``tuning_logs/*.jsonl`` (shipped with portable) and from the
user's directory (``PORTABLE_TUNING_DIR``, default ``~/.cache/portable/tuning_logs``). Appends are
atomic per line (one ``os.write`` on an ``O_APPEND`` descriptor, then ``fsync``), so concurrent
tuners never interleave records; a last line cut short by a crash is skipped with a warning.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import statistics
import tempfile
import threading
import time
import warnings
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Iterable

LOG_VERSION = 1

_REPO_LOG_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                             "tuning_logs")


@dataclass
class Record:
    """One measured candidate of one kernel on one target."""

    workload: str
    family: str
    target: str
    knobs: dict[str, Any]
    median_s: float | None = None
    std_s: float | None = None
    verified: bool = False
    error: str | None = None
    shape: list[list[int]] = field(default_factory=list)
    dtypes: list[str] = field(default_factory=list)
    task: str = ""
    portable: str = ""
    tvm: str = ""
    timestamp: float = 0.0
    #: cache protocol the time was measured under (``portable.tune.measure.CACHE_PROTOCOLS``; empty:
    #: written before the field existed, which means "cold")
    cache: str = ""
    v: int = LOG_VERSION

    @property
    def ok(self) -> bool:
        """True if the candidate ran, matched the reference and has a time."""
        return self.verified and self.error is None and self.median_s is not None and self.median_s > 0

    @property
    def key(self) -> tuple[str, str]:
        """(workload, target): records with the same key are alternatives for the same kernel."""
        return self.workload, self.target

    def to_json(self) -> str:
        """One line of JSON (no newline)."""
        return json.dumps(asdict(self), sort_keys=True, separators=(",", ":"), default=_json_default)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Record":
        """Build a record from a parsed JSON object, ignoring unknown fields."""
        names = set(cls.__dataclass_fields__)
        missing = {"workload", "family", "target", "knobs"} - set(data)
        if missing:
            raise ValueError(f"record lacks field(s) {sorted(missing)}")
        return cls(**{k: v for k, v in data.items() if k in names})


def _json_default(obj: Any) -> Any:
    if isinstance(obj, (set, tuple)):
        return list(obj)
    if hasattr(obj, "item"):  # numpy scalars
        return obj.item()
    return str(obj)


def knob_id(knobs: dict[str, Any]) -> str:
    """Canonical text of a knob assignment (tuples and lists compare equal)."""
    return json.dumps(knobs, sort_keys=True, separators=(",", ":"), default=_json_default)


def versions() -> tuple[str, str]:
    """(portable version, TVM version) stamped into new records."""
    from .. import __version__

    try:
        import tvm

        tvm_version = str(tvm.__version__)
    except Exception:  # pragma: no cover - tvm is a hard dependency
        tvm_version = "?"
    return __version__, tvm_version


def make_record(workload: str, family: str, target: str, knobs: dict[str, Any], **fields: Any) -> Record:
    """A record stamped with the current versions and time."""
    pv, tv = versions()
    return Record(workload=workload, family=family, target=target, knobs=dict(knobs), portable=pv, tvm=tv,
                  timestamp=time.time(), **fields)


# ----------------------------------------------------------------------------------------------- files


def append_record(path: str, record: Record) -> None:
    """Append one record as a single atomic write on an O_APPEND descriptor, then fsync."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    line = (record.to_json() + "\n").encode()
    fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        size = os.fstat(fd).st_size
        if size and os.pread(fd, 1, size - 1) != b"\n":
            line = b"\n" + line  # a previous writer died mid-line: never glue onto its fragment
        os.write(fd, line)
        os.fsync(fd)
    finally:
        os.close(fd)


def append_records(path: str, records: Iterable[Record]) -> None:
    """Append several records (each one atomic)."""
    for r in records:
        append_record(path, r)


def load_records(path: str) -> list[Record]:
    """Read a log; truncated or garbled lines are skipped with a warning naming file and line."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return []
    lines = data.split(b"\n")
    out: list[Record] = []
    last = max((i for i, ln in enumerate(lines) if ln.strip()), default=-1)
    for i, raw in enumerate(lines):
        if not raw.strip():
            continue
        try:
            out.append(Record.from_dict(json.loads(raw)))
        except (ValueError, TypeError, UnicodeDecodeError) as exc:
            what = "truncated last line" if i == last else "garbled line"
            warnings.warn(f"tuning log {path}:{i + 1}: skipping {what} ({exc})", stacklevel=2)
    return out


def write_records(path: str, records: Iterable[Record]) -> None:
    """Replace ``path`` with ``records`` atomically (temporary file, fsync, rename)."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp_", suffix=".jsonl", dir=directory)
    try:
        with os.fdopen(fd, "w") as f:
            for r in records:
                f.write(r.to_json() + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def user_log_dir() -> str:
    """The user's tuning-log directory (PORTABLE_TUNING_DIR, default ~/.cache/portable/tuning_logs)."""
    return os.environ.get("PORTABLE_TUNING_DIR",
                          os.path.join(os.path.expanduser("~"), ".cache", "portable", "tuning_logs"))


def default_user_log() -> str:
    """File new tuning records go to unless a log is named."""
    return os.path.join(user_log_dir(), "tuning.jsonl")


def shipped_log_path(target: Any) -> str:
    """The shipped log file for a target (``tuning_logs/<target key>.jsonl``, key made file-safe)."""
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in target.key)
    return os.path.join(_REPO_LOG_DIR, f"{safe}.jsonl")


def log_dirs() -> list[str]:
    """Directories whose ``*.jsonl`` files the compiler reads: the shipped logs, then the user's."""
    return [_REPO_LOG_DIR, user_log_dir()]


def log_files(dirs: Iterable[str] | None = None) -> list[str]:
    """Every ``*.jsonl`` file in the log directories, sorted."""
    files = []
    for d in (log_dirs() if dirs is None else dirs):
        if os.path.isdir(d):
            files += sorted(os.path.join(d, f) for f in os.listdir(d) if f.endswith(".jsonl"))
    return files


def load_all(paths: Iterable[str] | None = None) -> list[Record]:
    """Records of every given log file (default: all log directories)."""
    out: list[Record] = []
    for p in (log_files() if paths is None else paths):
        out += load_records(p)
    return out


_digest_cache: dict[tuple[str, int, int], bytes] = {}


def logs_digest(paths: Iterable[str] | None = None) -> bytes:
    """Digest of the content of every log file; changes whenever a log changes (keys the compile cache)."""
    h = hashlib.sha256()
    for p in (log_files() if paths is None else paths):
        try:
            st = os.stat(p)
        except OSError:
            continue
        key = (p, st.st_size, st.st_mtime_ns)
        digest = _digest_cache.get(key)
        if digest is None:
            with open(p, "rb") as f:
                digest = hashlib.sha256(f.read()).digest()
            _digest_cache[key] = digest
        h.update(p.encode() + b"\0" + digest)
    return h.digest()


# --------------------------------------------------------------------------------------- operations


def _ranked_points(records: Iterable[Record]) -> list[tuple[float, list[Record]]]:
    """One group's knob points, best first, as (median time, the point's records).

    A point measured several times (the tuner re-measures its leaders) counts with the median of its
    measurements, so one lucky sample on a noisy machine cannot make a slow point the winner; points
    measured more than once rank before every single-sample one, which is exactly the kind of
    measurement the re-measuring guards against. Ties go to the point with more measurements.

    Points are keyed by the knobs as logged. A record written before a knob existed lacks it and is
    not pooled with the whole point it stands for: lacking a knob is ambiguous in the shipped log
    (``elemwise`` records without ``tile_transpose`` were measured with gathers before the knob
    existed, but with its default once leaders were re-measured under their logged names). Pooling
    ``conv2d_nchwc`` records through ``Template.knobs_before_records`` anyway changed 16 of
    MobileNetV2's 33 kernel picks and measured the model 1.028x slower (per-round 95% interval
    [1.014, 1.064], 30 rounds, both builds in one process).
    Times from different sessions are not comparable either: the same 1x1 convolution was logged at
    0.13 ms one evening and 0.20-0.25 ms the next day. Ranking by a fitted per-session machine factor
    (``log t = point + session``, with the pooling above) changed 7 of ResNet-18's 22 picks and
    measured it 1.18x slower [1.01, 1.30], so ranking stays by the logged medians; ``portable tune
    --trials 0 --confirm N`` re-measures the leaders side by side.
    """
    points: dict[str, list[Record]] = {}
    for r in records:
        points.setdefault(knob_id(r.knobs), []).append(r)
    scored = [(len(recs) == 1, statistics.median(r.median_s for r in recs), -len(recs), i, recs)  # type: ignore[misc]
              for i, recs in enumerate(points.values())]
    return [(mid, recs) for _, mid, _, _, recs in sorted(scored)]


def cache_protocol(record: Record) -> str:
    """The cache protocol ``record`` was timed under ("cold" for records written before the field)."""
    return record.cache or "cold"


def _verified_groups(records: Iterable[Record]) -> dict[tuple[str, str], list[Record]]:
    """Verified records per (workload, target), only those timed under the cache protocol of the
    group's newest record: times under different protocols do not compare (a grouped convolution's
    fast tile measured 2x slower cold than warm, its slow tile hardly), so re-tuning a kernel under
    another protocol (``portable tune --cache``) replaces its earlier ranking without editing the log."""
    groups: dict[tuple[str, str], list[Record]] = {}
    for r in records:
        if r.ok:
            groups.setdefault(r.key, []).append(r)
    for key, recs in groups.items():
        latest = cache_protocol(max(recs, key=lambda r: r.timestamp))
        if any(cache_protocol(r) != latest for r in recs):
            groups[key] = [r for r in recs if cache_protocol(r) == latest]
    return groups


def ranked(records: Iterable[Record]) -> dict[tuple[str, str], list[Record]]:
    """Every verified knob point per (workload, target), best first (``_ranked_points``), each as one
    record carrying the point's median time."""
    return {key: [dataclasses.replace(point[-1], median_s=mid) for mid, point in _ranked_points(recs)]
            for key, recs in _verified_groups(records).items()}


def best(records: Iterable[Record]) -> dict[tuple[str, str], Record]:
    """Fastest verified knob point per (workload, target) (see ``ranked``)."""
    return {key: points[0] for key, points in ranked(records).items()}


def merge(paths: Iterable[str], out: str) -> int:
    """Union of several logs written to ``out`` (exact duplicates dropped); returns the record count."""
    seen: set[str] = set()
    merged: list[Record] = []
    for p in paths:
        for r in load_records(p):
            text = r.to_json()
            if text not in seen:
                seen.add(text)
                merged.append(r)
    merged.sort(key=lambda r: r.timestamp)
    write_records(out, merged)
    return len(merged)


def prune(path: str, keep: int = 1, out: str | None = None) -> int:
    """Keep the verified records of the best ``keep`` knob points per (workload, target); returns the count."""
    kept: list[Record] = []
    for recs in _verified_groups(load_records(path)).values():
        for _, point in _ranked_points(recs)[:keep]:  # every measurement of the best points, so their medians survive
            kept += point
    kept.sort(key=lambda r: (r.family, r.workload, r.target, r.median_s))
    write_records(out or path, kept)
    return len(kept)


def show(records: Iterable[Record], best_only: bool = False) -> str:
    """A text table of records (or of the best record per kernel)."""
    recs = list(best(records).values()) if best_only else list(records)
    rows = ["family     workload          target                      time(ms)   std(ms)  ok  knobs"]
    for r in sorted(recs, key=lambda r: (r.family, r.task, r.workload, r.median_s or math.inf)):
        t = f"{r.median_s * 1e3:9.4f}" if r.median_s else "        -"
        s = f"{r.std_s * 1e3:9.4f}" if r.std_s is not None else "        -"
        status = "yes" if r.ok else ("ERR" if r.error else "no ")
        extra = f"  [{r.error[:60]}]" if r.error else ""
        rows.append(f"{r.family:10s} {r.workload:16s}  {r.target:26s} {t} {s}  {status} "
                    f"{knob_id(r.knobs)}{extra}")
    return "\n".join(rows)


# ------------------------------------------------------------------------------------- knob lookup


def _normalise(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return [_normalise(v) for v in value]
    return value


def _same_value(a: Any, b: Any) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    return _normalise(a) == _normalise(b)


def match_space_partial(knobs: dict[str, Any], space: dict[str, list[Any]]) -> dict[str, Any]:
    """The knobs of ``knobs`` that are points of ``space`` (in the space's own values); the others are
    left to the template defaults. Any mix is valid: every point of a space must compile."""
    out: dict[str, Any] = {}
    for name, value in knobs.items():
        found = [c for c in space.get(name, []) if _same_value(c, value)]
        if found:
            out[name] = found[0]
    return out


def match_space(knobs: dict[str, Any], space: dict[str, list[Any]]) -> dict[str, Any] | None:
    """``knobs`` expressed with the space's own values, or None if any knob is not a point of it."""
    out = match_space_partial(knobs, space)
    return out if len(out) == len(knobs) else None


def shape_distance(a: list[list[int]], b: list[list[int]]) -> float:
    """Log-scale distance between two kernels' parameter shapes (inf if their ranks differ)."""
    if len(a) != len(b) or any(len(x) != len(y) for x, y in zip(a, b)):
        return math.inf
    return sum(abs(math.log2(max(x, 1)) - math.log2(max(y, 1))) for sa, sb in zip(a, b) for x, y in zip(sa, sb))


def func_signature(func: Any) -> tuple[list[list[int]], list[str]]:
    """Parameter shapes and dtypes of a PrimFunc (inputs, then outputs)."""
    shapes, dtypes = [], []
    for p in func.params:
        buf = func.buffer_map[p] if hasattr(func, "buffer_map") else p  # 0.27: params are buffers
        shapes.append([int(d) for d in buf.shape])
        dtypes.append(str(buf.dtype))
    return shapes, dtypes


def split_target_key(key: str) -> tuple[str, int | None]:
    """``"llvm/znver3/c16"`` -> ``("llvm/znver3", 16)``: the machine kind and its core count."""
    base, sep, cores = key.rpartition("/c")
    return (base, int(cores)) if sep and cores.isdigit() else (key, None)


class TuningDatabase:
    """Index of log records: best record per kernel, and tuned shapes per (family, target).

    Besides its own target, a lookup reads the records of *sibling* targets: the same TVM kind and
    CPU (``mcpu``) with another core count (``llvm/znver3/c2`` for ``llvm/znver3/c16``), nearest
    count first. Tile sizes, loop orders and vector choices depend on the core's registers and
    caches, not on how many cores there are, so the shipped logs of a 2-core machine also serve a
    16-core one of the same CPU; knobs whose values depend on the core count (tasks per core) are
    taken only where they are points of this target's space, else left at the default.
    """

    def __init__(self, records: Iterable[Record]):
        """Index ``records`` (failed and unverified ones are ignored)."""
        #: every verified knob point per (workload, target), best first
        self.ranked = ranked(records)
        self.best = {key: points[0] for key, points in self.ranked.items()}
        self.by_family: dict[tuple[str, str], list[Record]] = {}
        for r in self.best.values():
            self.by_family.setdefault((r.family, r.target), []).append(r)
        self.targets = sorted({t for _, t in self.best})

    def siblings(self, target: str) -> list[str]:
        """Logged targets of the same kind and CPU as ``target`` with another core count, nearest count
        (log scale) first."""
        base, cores = split_target_key(target)
        if cores is None:
            return []
        found = [(abs(math.log2(c) - math.log2(cores)), c, t) for t in self.targets if t != target
                 for b, c in [split_target_key(t)] if b == base and c]
        return [t for _, _, t in sorted(found)]

    def exact(self, workload: str, target: str) -> Record | None:
        """Best verified record of exactly this kernel on this target."""
        return self.best.get((workload, target))

    def own_knobs(self, workload: str, target: str, space: dict[str, list[Any]]) -> dict[str, Any] | None:
        """Knobs of this kernel's best record on this target whose knobs are all points of ``space``
        (a point the template no longer offers gives way to the next best), in the space's values."""
        for rec in self.ranked.get((workload, target), []):
            if (knobs := match_space(rec.knobs, space)) is not None:
                return knobs
        return None

    def transfer(self, family: str, target: str, shape: list[list[int]], dtypes: list[str],
                 space: dict[str, list[Any]]) -> tuple[Record, dict[str, Any]] | None:
        """Nearest tuned shape of the same family and target whose knobs are all valid here."""
        cands = []
        for r in self.by_family.get((family, target), []):
            if r.dtypes and dtypes and r.dtypes != dtypes:
                continue
            d = shape_distance(r.shape, shape)
            if math.isfinite(d):
                cands.append((d, r.median_s, r))
        for _, _, r in sorted(cands, key=lambda c: (c[0], c[1])):
            knobs = match_space(r.knobs, space)
            if knobs is not None:
                return r, knobs
        return None

    def choose(self, workload: str, family: str, target: str, space: dict[str, list[Any]],
               shape: list[list[int]], dtypes: list[str]) -> dict[str, Any] | None:
        """Knobs for one kernel on ``target`` (its key), first found of: its best record on this
        target, then on a sibling target (its knobs that are valid here), then the nearest tuned shape
        on this target, then on a sibling; else None (the template defaults)."""
        targets = [target, *self.siblings(target)]
        own = self.own_knobs(workload, target, space)
        if own is not None:
            return own
        for t in targets[1:]:
            rec = self.exact(workload, t)
            if rec is not None and (knobs := match_space_partial(rec.knobs, space)):
                return knobs
        for t in targets:
            found = self.transfer(family, t, shape, dtypes, space)
            if found:
                return found[1]
        return None

    def knows(self, family: str, target: str) -> bool:
        """True if any record of ``family`` on ``target`` or a sibling of it exists (else lookups
        can skip building the kernel's knob space)."""
        return any(self.by_family.get((family, t)) for t in (target, *self.siblings(target)))

    def lookup(self, kernel: Any, target: Any) -> dict[str, Any] | None:
        """Knobs for a ``portable.compiler.lower.Kernel`` on a ``TargetInfo`` (see ``choose``)."""
        from ..compiler.build import workload_key

        if not self.knows(kernel.family, target.key):
            return None
        shape, dtypes = func_signature(kernel.func)
        return self.choose(workload_key(kernel.func), kernel.family, target.key, kernel_space(kernel, target),
                           shape, dtypes)


def kernel_space(kernel: Any, target: Any) -> dict[str, list[Any]]:
    """Knob space of the template that schedules ``kernel`` on ``target``."""
    from tvm.s_tir import Schedule

    from schedules import ScheduleContext, get_template

    ctx = ScheduleContext(kernel.family, kernel.anchor_block, kernel.anchor_attrs, target,
                          set(kernel.const_args))
    return get_template(kernel.family, target.family).space(Schedule(kernel.func), ctx)


_db_lock = threading.Lock()
_db_cache: dict[bytes, TuningDatabase] = {}


def load_database(paths: Iterable[str] | None = None) -> TuningDatabase:
    """TuningDatabase of the given logs (default: every log directory), cached by content digest."""
    files = log_files() if paths is None else list(paths)
    digest = logs_digest(files) + repr(files).encode()
    with _db_lock:
        db = _db_cache.get(digest)
        if db is None:
            db = TuningDatabase(load_all(files))
            _db_cache.clear()
            _db_cache[digest] = db
    return db


def default_knob_lookup(paths: Iterable[str] | None = None) -> Callable[[Any, Any], dict[str, Any] | None]:
    """The compiler's knob lookup: best verified record, else a transferred one, else None (default)."""
    db = load_database(paths)

    def lookup(kernel: Any, target: Any) -> dict[str, Any] | None:
        if not db.best:
            return None
        try:
            return db.lookup(kernel, target)
        except Exception as exc:  # a bad log must never break compilation
            warnings.warn(f"tuning-log lookup failed for {kernel.name}: {exc}", stacklevel=2)
            return None

    return lookup
