"""Progress lines for the console and the Prefect UI.

vcn's own lines (what it is doing per title and stage, progress, warnings) go through the Prefect
run loggers, so that the UI shows them, marked with :data:`CONSOLE` so that the console shows
them too while it hides the libraries' logs (``flows/console.py``). Progress is a line every few
percent with the time spent and an estimate of the time left, so it shows in a log file or a CI
job as well as on a terminal.
"""

from __future__ import annotations

import logging
import time
from typing import Any

# ``extra`` of a log record meant for the console.
CONSOLE: dict[str, Any] = {"vcn_console": True}


def say(logger: Any, msg: str, *args: Any, level: int = logging.INFO, console: bool = True) -> None:
    """Log ``msg`` on a Prefect run logger (the UI); ``console``: on the console as well."""
    logger.log(level, msg, *args, extra=CONSOLE if console else {})


def duration(seconds: float) -> str:
    """``42 s``, ``3 min 05 s``, ``1 h 02 min``."""
    seconds = max(0.0, seconds)
    if seconds < 60:
        return f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{int(seconds // 60)} min {int(seconds % 60):02d} s"
    return f"{int(seconds // 3600)} h {int(seconds % 3600 // 60):02d} min"


class Progress:
    """Logs ``label: done/total unit (p %), T elapsed, ~R left`` every ``every_pct`` percent.

    ``done`` may start above 0 (work resumed): the estimate uses only the work done since.
    ``started``: ``time.monotonic()`` when the work began (default: now).
    """

    def __init__(self, logger: Any, label: str, total: int, unit: str, *, done: int = 0,
                 every_pct: float = 10.0, console: bool = True, started: float | None = None) -> None:
        self.logger, self.label, self.total, self.unit = logger, label, max(total, 1), unit
        self.every_pct, self.console = every_pct, console
        self.t0, self.first = time.monotonic() if started is None else started, done
        self.next_pct = (100.0 * done / self.total // every_pct + 1) * every_pct

    def line(self, done: int) -> str:
        elapsed = time.monotonic() - self.t0
        pct = 100.0 * done / self.total
        text = f"{self.label}: {done}/{self.total} {self.unit} ({pct:.0f} %), {duration(elapsed)}"
        if done > self.first and done < self.total:
            left = elapsed / (done - self.first) * (self.total - done)
            text += f", ~{duration(left)} left"
        return text

    def update(self, done: int) -> None:
        """Log a line when ``done`` crosses the next step, and once at the end."""
        pct = 100.0 * done / self.total
        if pct + 1e-9 < self.next_pct and done < self.total:
            return
        if self.next_pct > 100.0 + self.every_pct:  # the end was reported already
            return
        say(self.logger, "%s", self.line(done), console=self.console)
        self.next_pct = (pct // self.every_pct + 1) * self.every_pct if done < self.total else float("inf")
