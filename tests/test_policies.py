"""Retry policy: the tasks retry transient failures (I/O, connections, a lost worker) only.

Each case runs a real Prefect task under a real (temporary) Prefect server with the retry
settings of one of vcn's own tasks, so the test covers how Prefect applies the policy, not just
the predicate.
"""

from __future__ import annotations

import errno
import importlib
import pkgutil

from prefect import Flow, Task

import vcn.tasks
from vcn.errors import StageError, VideoOpenError
from vcn.tasks.cluster import cluster_tracks
from vcn.tasks.finetune import finetune_model
from vcn.tasks.ingest import ingest_chunk
from vcn.tasks.policies import is_transient


def vcn_tasks() -> list[Task]:
    """Every Prefect task that the modules of ``tasks/`` define, so a new task is covered too."""
    found: dict[str, Task] = {}
    for info in pkgutil.iter_modules(vcn.tasks.__path__):
        module = importlib.import_module(f"vcn.tasks.{info.name}")
        for obj in vars(module).values():
            if isinstance(obj, Task) and obj.fn.__module__ == module.__name__:
                found[obj.name] = obj
    return [found[name] for name in sorted(found)]


VCN_TASKS = vcn_tasks()


class KilledWorker(Exception):
    """Stands in for ``distributed.scheduler.KilledWorker``, recognised by its name."""


class FailedState:
    """The part of a Prefect state ``is_transient`` reads: the exception in ``data``."""

    def __init__(self, exc: BaseException) -> None:
        self.data = exc


def attempts(cases: list[tuple[Task, list[BaseException]]]) -> list[tuple[int, BaseException | None]]:
    """For each (vcn task, errors): run a task with that task's retry policy (no delay) that raises
    ``errors`` in turn, then succeeds. Returns, per case, how many times it ran and the exception
    it finally failed with (None when it succeeded). All cases run in one flow."""

    def one(template: Task, errors: list[BaseException]) -> tuple[int, BaseException | None]:
        calls: list[int] = []

        def body() -> str:
            calls.append(1)
            if len(calls) <= len(errors):
                raise errors[len(calls) - 1]
            return "ok"

        probe = Task(fn=body, name=f"policy-of-{template.name}", retries=template.retries,
                     retry_delay_seconds=0, retry_condition_fn=template.retry_condition_fn)
        state = probe(return_state=True)
        return len(calls), None if state.is_completed() else state.result(raise_on_failure=False)

    return Flow(fn=lambda: [one(t, e) for t, e in cases], name="retry-policy")()


DETERMINISTIC = [RuntimeError("mat1 and mat2 shapes cannot be multiplied (4x511 and 512x128)"),
                 NotImplementedError("distance 'l3'"), ValueError("bad value")]


def test_deterministic_errors_fail_once(prefect_server):
    assert {"prepare-movie", "ingest-chunk", "assemble-tracks", "finetune", "cluster-tracks", "write-report",
            "plan-library", "publish-catalogue", "link-identities"} <= {t.name for t in VCN_TASKS}
    cases = [(t, [exc]) for t in VCN_TASKS for exc in DETERMINISTIC]
    assert all(t.retries >= 1 for t in VCN_TASKS), "every vcn task retries transient failures"
    for (template, (exc,)), (runs, failure) in zip(cases, attempts(cases), strict=True):
        assert runs == 1, f"{template.name} retried {type(exc).__name__}"
        assert type(failure) is type(exc)


def test_transient_errors_are_retried(prefect_server):
    cases = [(t, [exc]) for t in (ingest_chunk, finetune_model, cluster_tracks)
             for exc in (ConnectionResetError("peer reset"), KilledWorker("worker lost"),
                         TimeoutError("scheduler did not answer"))]
    for (template, (exc,)), result in zip(cases, attempts(cases), strict=True):
        assert result == (2, None), f"{template.name} did not retry {type(exc).__name__}"


def test_transient_error_classes():
    for exc in (OSError(errno.EIO, "I/O error"), TimeoutError("locked"), ConnectionRefusedError(),
                BrokenPipeError(), KilledWorker("w")):
        assert is_transient(None, None, FailedState(exc)), exc
    for exc in (RuntimeError("CUDA error: device-side assert"), NotImplementedError(), MemoryError(),
                FileNotFoundError(errno.ENOENT, "gone"), PermissionError(errno.EACCES, "denied"),
                IsADirectoryError(), OSError(errno.EROFS, "read-only file system"),
                VideoOpenError("x.mp4: the file is empty"), StageError("no model"), ZeroDivisionError()):
        assert not is_transient(None, None, FailedState(exc)), exc
