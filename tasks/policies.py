"""Retry and cache policies shared by the tasks.

Retries are for transient failures only (I/O and connection errors, a worker lost mid-task,
timeouts); a bad input file, a bad config or a bug (a ``RuntimeError`` from torch, a
``NotImplementedError``) fails at once with its message, since retrying cannot fix it.
Cache keys combine the movie's content id, the stage hash (its config section, the models and its
algorithm version, not the source code) and whether the stage's output files are still on disk,
so a deleted output is recomputed even when Prefect remembers a cached result.
"""

from __future__ import annotations

import errno
import uuid
from typing import Any

from vcn.errors import VcnError

# Errors a retry can plausibly fix: I/O and connection errors (OSError and its subclasses
# ConnectionError, TimeoutError, a closed Dask comm), and a lost worker (Dask's KilledWorker).
# Everything else is deterministic for the same input, config and code (a bug such as a torch
# shape error, a NotImplementedError, a MemoryError) and fails at once, as do vcn's own errors
# (bad input, missing model, bad config).
TRANSIENT: tuple[type[BaseException], ...] = (OSError,)
# Dask's errors for a worker lost mid-task or a scheduler that stopped answering, by class name:
# tasks/ must not need distributed to decide (the names are stable across distributed releases).
TRANSIENT_NAMES = frozenset({"KilledWorker", "CommClosedError", "FatalCommClosedError"})
# OSErrors that say something about the path, not the moment: retrying cannot fix them.
PERMANENT_OS: tuple[type[OSError], ...] = (
    FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError, FileExistsError,
)
PERMANENT_ERRNOS = frozenset({errno.ENAMETOOLONG, errno.EROFS, errno.ENOTEMPTY, errno.EINVAL})


def _exception_of(state: Any) -> BaseException | None:
    data = getattr(state, "data", None)
    if isinstance(data, BaseException):
        return data
    try:
        result = state.result(raise_on_failure=False)
    except Exception as exc:  # the result itself may be the stored exception re-raised
        return exc
    return result if isinstance(result, BaseException) else None


def is_transient_error(exc: BaseException) -> bool:
    """True when a retry may succeed where ``exc`` failed (see :data:`TRANSIENT`)."""
    if isinstance(exc, VcnError):
        return False
    if any(cls.__name__ in TRANSIENT_NAMES for cls in type(exc).__mro__):
        return True
    if not isinstance(exc, TRANSIENT) or isinstance(exc, PERMANENT_OS):
        return False
    return getattr(exc, "errno", None) not in PERMANENT_ERRNOS


def is_transient(task: Any, task_run: Any, state: Any) -> bool:
    """Prefect ``retry_condition_fn``: retry I/O, connection and lost-worker failures only."""
    exc = _exception_of(state)
    return exc is not None and is_transient_error(exc)


def chunk_cache_key(context: Any, parameters: dict[str, Any]) -> str:
    """Cache key of ``ingest_chunk``: movie, chunk, stage hash (config, models, stage version), and
    output presence."""
    ctx, chunk = parameters["ctx"], parameters["chunk"]
    layout = ctx.layout
    present = layout.chunk_faces(chunk.index).exists() and layout.chunk_crops(chunk.index).exists()
    # Missing output or a forced re-run: never a cache hit.
    nonce = "present" if present and not parameters.get("force") else uuid.uuid4().hex
    return f"vcn-chunk-{ctx.movie_id}-{chunk.index}-{chunk.read_start}-{chunk.end}-" \
           f"{ctx.stage_hash('tracks')}-{nonce}"
