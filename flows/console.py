"""What a vcn command prints: one line per input error, no traceback unless ``--verbose``.

``VCN_VERBOSE=1`` (set by ``vcn --verbose``; Dask worker processes inherit it) restores the
libraries' own logging, and with it Prefect's tracebacks for expected input errors.
"""

from __future__ import annotations

import os

VERBOSE_ENV = "VCN_VERBOSE"


def verbose() -> bool:
    """True when the user asked for the libraries' logs and every traceback (``--verbose``)."""
    return os.environ.get(VERBOSE_ENV, "") not in ("", "0")


def configure(verbose_output: bool) -> None:
    """Set the console mode of this process and of the worker processes it starts."""
    os.environ[VERBOSE_ENV] = "1" if verbose_output else "0"
