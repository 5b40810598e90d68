"""Retry policy shared by the tasks, and why they keep no Prefect results.

Retries are for transient failures only (I/O hiccups, a worker lost mid-task, timeouts); a bad
input file or a bad config fails at once with its message, since retrying cannot fix it.

Every task is declared with ``persist_result=False``, which also turns Prefect's cache off: what
is done is recorded by vcn's own files (``manifest.json`` per stage, the chunk files' metadata
per chunk), and Prefect reads a persisted result back with whatever deserializer the result file
names, pickle included, so a result file on shared storage could run code (docs/operations.md).
"""

from __future__ import annotations

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
