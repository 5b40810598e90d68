"""Retry and cache policies shared by the tasks.

Retries are for transient failures only (I/O hiccups, a worker lost mid-task, timeouts); a bad
input file or a bad config fails at once with its message, since retrying cannot fix it.
Cache keys combine the movie's content id, the stage's config fingerprint, the code hash and
whether the stage's output files are still on disk, so a deleted output is recomputed even when
Prefect remembers a cached result.
"""

from __future__ import annotations

import uuid
from typing import Any

from vcn.errors import VcnError

# Errors a retry can plausibly fix. VcnError subclasses (bad input, missing model, bad config)
# are never retried.
TRANSIENT = (OSError, TimeoutError, ConnectionError, MemoryError, RuntimeError)


def _exception_of(state: Any) -> BaseException | None:
    data = getattr(state, "data", None)
    if isinstance(data, BaseException):
        return data
    try:
        result = state.result(raise_on_failure=False)
    except Exception as exc:  # the result itself may be the stored exception re-raised
        return exc
    return result if isinstance(result, BaseException) else None


def is_transient(task: Any, task_run: Any, state: Any) -> bool:
    """Prefect ``retry_condition_fn``: retry unless the failure is a vcn error on the input."""
    exc = _exception_of(state)
    if exc is None or isinstance(exc, VcnError):
        return False
    return isinstance(exc, TRANSIENT) and not isinstance(exc, (FileNotFoundError, PermissionError))


def chunk_cache_key(context: Any, parameters: dict[str, Any]) -> str:
    """Cache key of ``ingest_chunk``: movie, chunk, stage config, code, and output presence."""
    ctx, chunk = parameters["ctx"], parameters["chunk"]
    layout = ctx.layout
    present = layout.chunk_faces(chunk.index).exists() and layout.chunk_crops(chunk.index).exists()
    # Missing output or a forced re-run: never a cache hit.
    nonce = "present" if present and not parameters.get("force") else uuid.uuid4().hex
    return f"vcn-chunk-{ctx.movie_id}-{chunk.index}-{chunk.read_start}-{chunk.end}-" \
           f"{ctx.stage_hash('tracks')}-{ctx.code_hash}-{nonce}"
