"""Atomic writes: a file is either absent or complete, never half-written.

Every writer goes through a temporary file in the destination's folder, flushed and fsynced, then
``os.replace``-d into place. A crash leaves at most a ``.tmp-*`` file that no reader trusts.
The temporary file is created with mode ``0o666`` filtered by the process umask, so the finished
file gets the permissions a plain ``open(dest, "w")`` would give it (``0644`` under the usual
umask ``022``, ``0664`` under ``002``), not the owner-only ``0600`` of ``tempfile.mkstemp``.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq


@contextlib.contextmanager
def atomic_path(dest: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path next to ``dest``; on success rename it to ``dest``.

    The caller writes the whole file to the yielded path. On an exception the temporary file is
    removed and ``dest`` is untouched.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp_path = _create_temp(dest)
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp_path, dest)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def _create_temp(dest: Path) -> Path:
    """Create an empty, uniquely named temporary file next to ``dest``; the kernel applies the
    umask to its mode ``0o666``, as for any file ``open()`` creates."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
    while True:
        tmp = dest.parent / f".tmp-{dest.name}.{secrets.token_hex(6)}"
        try:
            fd = os.open(tmp, flags, 0o666)
        except FileExistsError:
            continue
        os.close(fd)
        return tmp


def write_bytes(dest: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``dest`` atomically."""
    with atomic_path(dest) as tmp:
        tmp.write_bytes(data)


def write_json(dest: str | os.PathLike[str], obj: Any) -> None:
    """Write ``obj`` as indented JSON to ``dest`` atomically."""
    write_bytes(dest, (json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n").encode())


def write_parquet(dest: str | os.PathLike[str], table: pa.Table) -> None:
    """Write a Parquet file atomically (zstd compressed)."""
    with atomic_path(dest) as tmp:
        pq.write_table(table, tmp, compression="zstd")


def read_json(path: str | os.PathLike[str]) -> Any:
    """Read a JSON file written by :func:`write_json`."""
    with open(path) as fh:
        return json.load(fh)
