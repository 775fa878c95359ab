"""compile(): import if needed, look up the artifact cache, compile, store in the cache."""

from __future__ import annotations

import hashlib
import logging
import os
from typing import Any

from ..graph import Graph
from ..targets import resolve_target
from .build import cache_dir, compile_graph

log = logging.getLogger("portable.compile")


def graph_digest(graph: Graph) -> bytes:
    """Digest of a graph's structure, shapes and constant values."""
    h = hashlib.sha256()
    for n in graph.nodes:
        h.update(repr((n.op, n.opset, n.inputs, n.outputs, sorted((k, repr(v)) for k, v in n.attrs.items()))).encode())
    h.update(repr((graph.inputs, graph.outputs, sorted((k, v.shape, v.dtype) for k, v in graph.values.items()))).encode())
    for name in sorted(graph.constants):
        arr = graph.constants[name]
        h.update(name.encode() + str(arr.dtype).encode() + repr(arr.shape).encode())
        h.update(arr.tobytes())
    return h.digest()


def source_digest() -> bytes:
    """Digest of portable's and the schedules' source, so code changes invalidate the cache."""
    import schedules

    from .. import __file__ as pkg_file

    h = hashlib.sha256()
    for root in (os.path.dirname(pkg_file), os.path.dirname(schedules.__file__)):
        for dirpath, _, files in sorted(os.walk(root)):
            for f in sorted(files):
                if f.endswith(".py"):
                    with open(os.path.join(dirpath, f), "rb") as fh:
                        h.update(fh.read())
    return h.digest()


def compile_model(model: Any, target: str = "host", use_tuning_logs: bool = True, cache: bool = True) -> Any:
    """Compile a Graph or ONNX model for ``target`` (cached on disk by content)."""
    from .. import load_onnx
    from ..runtime.executable import load

    graph = model if isinstance(model, Graph) else load_onnx(model)
    tgt = resolve_target(target)
    lookup = None
    log_digest = b""
    if use_tuning_logs:
        try:
            from ..tune.records import default_knob_lookup, logs_digest
        except ImportError:
            pass
        else:
            lookup = default_knob_lookup()
            log_digest = logs_digest()
    key = None
    if cache and os.environ.get("PORTABLE_NO_CACHE") != "1":
        from .build import cache_key
        from .passes import rewrite_switches

        key = cache_key([graph_digest(graph), tgt.key.encode(), source_digest(), log_digest, rewrite_switches(tgt)])
        path = os.path.join(cache_dir(), f"{key}.ptb")
        if os.path.exists(path) and tgt.host_runnable:
            try:
                return load(path)
            except Exception as exc:  # a corrupt cache entry is rebuilt, never trusted
                log.warning("ignoring unreadable cache entry %s: %s", path, exc)
    exe = compile_graph(graph, tgt, lookup)
    if key is not None:
        tmp = os.path.join(cache_dir(), f"{key}.{os.getpid()}.tmp")
        try:
            exe.save(tmp)
            os.replace(tmp, os.path.join(cache_dir(), f"{key}.ptb"))
        except Exception as exc:
            log.warning("could not write compile cache: %s", exc)
            if os.path.exists(tmp):
                os.remove(tmp)
    return exe
