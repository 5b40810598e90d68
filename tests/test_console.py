"""The console: vcn's lines and warnings pass, the libraries' INFO logs do not; progress lines."""

from __future__ import annotations

import logging
import sys

from vcn.errors import TruncatedVideoError
from vcn.flows.console import ConsoleFilter, ConsoleFormatter, install_console_handler
from vcn.tasks.progress import CONSOLE, Progress, duration


def record(name: str, level: int, msg: str, exc: BaseException | None = None, **extra) -> logging.LogRecord:
    exc_info = (type(exc), exc, exc.__traceback__) if exc is not None else None
    rec = logging.LogRecord(name, level, __file__, 1, msg, (), exc_info)
    rec.__dict__.update(extra)
    return rec


def test_console_filter_keeps_vcn_lines_warnings_and_bugs():
    keep = ConsoleFilter().filter
    assert keep(record("prefect.flow_runs", logging.INFO, "x.mp4: tracks done in 9 s", **CONSOLE))
    assert keep(record("prefect.task_runs", logging.WARNING, "x.mp4: 3 undecodable packet(s) skipped"))
    assert keep(record("distributed.nanny", logging.WARNING, "Worker process 123 was killed by signal 9"))
    try:
        raise RuntimeError("mat1 and mat2 shapes cannot be multiplied")
    except RuntimeError as exc:
        bug = record("prefect.flow_runs", logging.ERROR, "Encountered exception during execution", exc)
    assert keep(bug), "a bug keeps its traceback"
    text = ConsoleFormatter().format(bug)
    assert "Traceback" in text and "mat1 and mat2" in text
    # The libraries' INFO chatter, Prefect's state lines and repeats of vcn's own errors go.
    assert not keep(record("distributed.scheduler", logging.INFO, "Register worker addr: tcp://127.0.0.1:1"))
    assert not keep(record("prefect", logging.INFO, "Starting temporary server on http://127.0.0.1:8231"))
    state = "Finished in state Failed('Task run encountered an exception TruncatedVideoError')"
    assert not keep(record("prefect.task_runs", logging.ERROR, state))
    assert not keep(record("prefect.task_runs", logging.ERROR, "Task run failed - Retries are exhausted",
                           TruncatedVideoError("x.mp4: truncated")))


def test_dask_shutdown_races_are_dropped_and_a_lost_worker_is_not():
    install_console_handler()
    worker, nanny = logging.getLogger("distributed.worker"), logging.getLogger("distributed.nanny")
    heartbeat = "Failed to communicate with scheduler during heartbeat."
    assert not worker.filter(record("distributed.worker", logging.ERROR, heartbeat))
    assert worker.filter(record("distributed.worker", logging.ERROR, "Compute Failed"))
    assert not nanny.filter(record("distributed.nanny", logging.WARNING,
                                   "Worker process still alive after 4.0 seconds, killing"))
    killed = "Worker process 123 was killed by signal 9"
    assert nanny.filter(record("distributed.nanny", logging.WARNING, killed))


def test_console_lines_are_short():
    rec = record("prefect.flow_runs", logging.INFO, "x.mp4: tracks done", **CONSOLE)
    line = ConsoleFormatter().format(rec)
    assert line.endswith(" x.mp4: tracks done") and len(line) == len("12:00:00 x.mp4: tracks done")


class Collect:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def log(self, level: int, msg: str, *args, extra: dict) -> None:
        assert extra == CONSOLE
        self.lines.append(msg % args)


def test_progress_every_ten_percent_with_time_left(monkeypatch):
    now = [100.0]
    monkeypatch.setattr(sys.modules["vcn.tasks.progress"].time, "monotonic", lambda: now[0])
    log = Collect()
    progress = Progress(log, "x.mp4: tracks", 40, "chunks")
    for done in range(1, 41):
        now[0] += 3.0
        progress.update(done)
    progress.update(40)
    assert len(log.lines) == 10, log.lines
    assert log.lines[0] == "x.mp4: tracks: 4/40 chunks (10 %), 12 s, ~1 min 48 s left"
    assert log.lines[-1] == "x.mp4: tracks: 40/40 chunks (100 %), 2 min 00 s"


def test_progress_of_resumed_work_estimates_from_the_work_done_since(monkeypatch):
    monkeypatch.setattr(sys.modules["vcn.tasks.progress"].time, "monotonic", lambda: 10.0)
    log = Collect()
    progress = Progress(log, "finetune round 1", 100, "steps", done=50, started=0.0)
    progress.update(55)
    assert log.lines == []
    progress.update(60)  # 10 steps in 10 s since the resume: 40 left, 40 s
    assert log.lines == ["finetune round 1: 60/100 steps (60 %), 10 s, ~40 s left"]


def test_duration():
    assert [duration(s) for s in (4.2, 65, 3725)] == ["4 s", "1 min 05 s", "1 h 02 min"]
