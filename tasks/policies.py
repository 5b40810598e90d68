"""Retry policy shared by the tasks, and why they keep no Prefect results.

Retries are for transient failures only (I/O and connection errors, a worker lost mid-task,
timeouts); a bad input file, a bad config or a bug (a ``RuntimeError`` from torch, a
``NotImplementedError``) fails at once with its message, since retrying cannot fix it.

Every task is declared with ``persist_result=False``, which also turns Prefect's cache off: what
is done is recorded by vcn's own files (``manifest.json`` per stage, the chunk files' metadata
per chunk), and Prefect reads a persisted result back with whatever deserializer the result file
names, pickle included, so a result file on shared storage could run code (docs/operations.md).
"""

from __future__ import annotations

import errno
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
