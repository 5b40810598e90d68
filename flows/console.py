"""What a vcn command prints.

By default the console shows what vcn is doing (per title and stage, progress, warnings, one
line per failed title) and the summary; the libraries' INFO logs (Prefect's state changes,
Dask's scheduler and worker chatter) go to the Prefect UI or nowhere. vcn's lines are the log
records marked with :data:`vcn.tasks.progress.CONSOLE`; everything else needs WARNING or above to
show, except Prefect's "Finished in state" lines (vcn reports each title's result itself) and
records of vcn's own errors, which the title's one-line failure already says.

``--verbose`` (``VCN_VERBOSE=1``, inherited by the Dask worker processes) leaves the libraries'
logging as it is, tracebacks of expected input errors included.

:func:`configure` sets this up in the command's process; on a local Dask cluster each worker
process loads this module as a Dask preload (:func:`dask_setup`) and sets it up there.
"""

from __future__ import annotations

import logging
import os
import sys
import time
import warnings
from typing import Any

VERBOSE_ENV = "VCN_VERBOSE"
# Dask's INFO lines (scheduler and worker start, connections, shutdown): workers read this from
# their environment when distributed is imported.
_DASK_LOGGING_ENV = "DASK_LOGGING__DISTRIBUTED"


def verbose() -> bool:
    """True when the user asked for the libraries' logs and every traceback (``--verbose``)."""
    return os.environ.get(VERBOSE_ENV, "") not in ("", "0")


class ConsoleFilter(logging.Filter):
    """Keep vcn's console lines and other WARNING+ records, minus Prefect's state changes and
    repeated reports of vcn's own errors."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "vcn_console", False):
            return True
        if record.levelno < logging.WARNING:
            return False
        if record.name.startswith(("prefect.flow_runs", "prefect.task_runs")) and \
                record.getMessage().startswith("Finished in state"):
            return False
        from vcn.errors import VcnError

        exc = record.exc_info[1] if record.exc_info else None
        return not isinstance(exc, VcnError)


class ConsoleFormatter(logging.Formatter):
    """``HH:MM:SS message`` for vcn's lines; level and logger name for the others."""

    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%H:%M:%S", time.localtime(record.created))
        if getattr(record, "vcn_console", False):
            level = "" if record.levelno == logging.INFO else f"{record.levelname} "
            text = f"{stamp} {level}{record.getMessage()}"
        else:
            text = f"{stamp} {record.levelname} {record.name}: {record.getMessage()}"
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        return text


class _DropShutdownNoise(logging.Filter):
    """Dask's shutdown races on a local cluster the command closes itself: the nanny warns when it
    has to kill a worker that is slow to exit, and a worker whose heartbeat is in flight as the
    scheduler closes logs the closed connection with its traceback."""

    NOISE = ("still alive after", "Failed to communicate with scheduler during heartbeat")

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(text in message for text in self.NOISE)


def install_console_handler() -> None:
    """Replace Prefect's console handler on the root logger by vcn's (idempotent)."""
    import prefect.logging.configuration as prefect_logging
    from prefect.logging.handlers import PrefectConsoleHandler

    prefect_logging.ensure_logging_setup()
    root = logging.getLogger()
    for handler in list(root.handlers):
        if isinstance(handler, PrefectConsoleHandler):
            root.removeHandler(handler)
    if not any(getattr(h, "vcn_console", False) for h in root.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.vcn_console = True  # type: ignore[attr-defined]
        handler.addFilter(ConsoleFilter())
        handler.setFormatter(ConsoleFormatter())
        root.addHandler(handler)
    # vcn's INFO lines come from Prefect's run loggers, which propagate to the root logger.
    for name in ("prefect.flow_runs", "prefect.task_runs"):
        if logging.getLogger(name).getEffectiveLevel() > logging.INFO:
            logging.getLogger(name).setLevel(logging.INFO)
    for name in ("distributed.nanny", "distributed.worker"):
        dask_logger = logging.getLogger(name)
        if not any(isinstance(f, _DropShutdownNoise) for f in dask_logger.filters):
            dask_logger.addFilter(_DropShutdownNoise())


def configure(verbose_output: bool) -> None:
    """Set the console of this process, and of the worker processes it starts, to vcn's lines
    (or, ``verbose_output``, to the libraries' own logging). Call it before Prefect or Dask is
    imported, so that Dask's logging picks up its level."""
    os.environ[VERBOSE_ENV] = "1" if verbose_output else "0"
    if verbose_output:
        return
    os.environ.setdefault(_DASK_LOGGING_ENV, "warning")
    # A dashboard port taken by another cluster on the machine: Dask picks another one.
    warnings.filterwarnings("ignore", message=r"Port \d+ is already in use", category=UserWarning)
    install_console_handler()


def dask_setup(worker: Any) -> None:
    """Dask preload hook: a local worker process prints what the command's process prints."""
    if not verbose():
        install_console_handler()
