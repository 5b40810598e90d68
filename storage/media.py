"""The media library's side of ingestion: which files under a root are videos, and which a
title catalogue (CSV or Parquet with a ``path`` column) lists.

Only reads; vcn never writes inside a media library.
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from vcn.errors import InputError

# Container suffixes FFmpeg reads that hold film and TV footage; matched case-insensitively.
VIDEO_EXTENSIONS = frozenset({
    ".mp4", ".m4v", ".mkv", ".mov", ".avi", ".webm", ".ts", ".m2ts", ".mts", ".mpg", ".mpeg",
    ".mpe", ".vob", ".wmv", ".flv", ".ogv", ".3gp", ".mxf", ".divx",
})


def find_videos(root: str | os.PathLike[str]) -> tuple[list[str], int]:
    """Video files under ``root`` (recursive, sorted, absolute) and the count of other files.

    Hidden files and folders (``.name``) are passed over: they hold partial downloads, OS
    metadata and vcn's own temporary files. Raises :class:`InputError` when ``root`` is not a folder.
    """
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"{root}: the library root is not a folder; pass the folder that holds the videos")
    videos, others = [], 0
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in files:
            if name.startswith("."):
                continue
            if Path(name).suffix.lower() in VIDEO_EXTENSIONS:
                videos.append(os.path.abspath(Path(folder) / name))
            else:
                others += 1
    return sorted(videos), others


def read_catalogue_file(
    path: str | os.PathLike[str], root: str | os.PathLike[str] | None = None
) -> list[str]:
    """Video paths listed in the ``path`` column of a CSV or Parquet file, in file order.

    Relative paths are taken relative to ``root`` when given, else to the catalogue's folder;
    symbolic links are kept as written (the manifest records the path the user knows).
    Raises :class:`InputError` naming the file when it is unreadable or has no ``path`` column.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    try:
        if suffix == ".csv":
            table = pd.read_csv(path, dtype=str, keep_default_na=False)
        elif suffix in (".parquet", ".pq"):
            table = pd.read_parquet(path)
        else:
            raise InputError(f"{path}: a title catalogue must be a .csv or .parquet file with a path column")
    except (OSError, ValueError, pd.errors.ParserError) as exc:
        raise InputError(f"{path}: cannot read the title catalogue ({exc})") from exc
    if "path" not in table.columns:
        raise InputError(f"{path}: the title catalogue has no 'path' column (columns: {list(table.columns)})")
    base = Path(root) if root else path.parent
    entries = [str(p).strip() for p in table["path"].tolist() if str(p).strip()]
    return [os.path.abspath(base / p) for p in entries]
