"""Load a finished movie's outputs (``OUT/<movie_id>/``) as tables for reports and analysis.

Embedding columns are left out unless asked for: a 2-hour movie's ``faces.parquet`` holds about
100k 512-d embeddings (200 MB as Python objects), which a report never looks at.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from vcn.errors import StageError
from vcn.report.html import MovieResults
from vcn.storage.crops import read_crops
from vcn.storage.layout import MovieLayout
from vcn.storage.manifest import read_manifest

__all__ = ["MovieResults", "load_crops", "load_results"]

_EMBEDDING_COLUMNS = {"embedding", "mean_embedding", "landmarks"}


def _fix(layout: MovieLayout) -> str:
    return (f"finish the run with `vcn rerun {layout.root}` (or `vcn run VIDEO --out {layout.root.parent}`)")


def _read_table(path: Path, layout: MovieLayout, embeddings: bool) -> pa.Table:
    try:
        schema = pq.read_schema(path)
        columns = [n for n in schema.names if embeddings or n not in _EMBEDDING_COLUMNS]
        return pq.read_table(path, columns=columns)
    except (OSError, pa.ArrowException) as exc:
        raise StageError(f"{path}: unreadable Parquet file ({exc}); delete it and {_fix(layout)}") from exc


def load_results(movie_dir: str | os.PathLike[str], *, embeddings: bool = False) -> MovieResults:
    """Read ``manifest.json``, ``faces``, ``tracks``, ``shots`` and ``clusters.parquet`` of a movie.

    ``embeddings``: also load ``embedding``/``landmarks`` (faces) and ``mean_embedding`` (tracks)
    as columns of arrays. Raises :class:`StageError` naming the missing or unreadable file, or the
    unfinished stage, and the command that completes the folder.
    """
    layout = MovieLayout(Path(movie_dir))
    if not layout.root.is_dir():
        raise StageError(f"{layout.root}: no such folder; pass a movie's output folder OUT/<movie_id> "
                         "written by `vcn run`")
    needed = [layout.manifest, layout.faces, layout.tracks, layout.shots, layout.clusters]
    missing = [p.name for p in needed if not p.exists()]
    if missing:
        raise StageError(f"{layout.root}: {', '.join(missing)} missing (the run did not finish); "
                         f"{_fix(layout)}")
    try:
        manifest = read_manifest(layout)
    except (OSError, ValueError) as exc:
        raise StageError(f"{layout.manifest}: unreadable JSON ({exc}); {_fix(layout)}") from exc
    # clusters.parquet from an older run may outlive a failed re-run: trust the completion record.
    clusters = manifest.stages.get("clusters")
    status = clusters.status if clusters is not None else None
    if status != "completed":
        raise StageError(f"{layout.manifest}: the clusters stage is {status or 'not recorded'}, so "
                         f"{layout.clusters.name} may be stale; {_fix(layout)}")
    tables = {name: _read_table(path, layout, embeddings).to_pandas()
              for name, path in (("faces", layout.faces), ("tracks", layout.tracks),
                                 ("shots", layout.shots), ("clusters", layout.clusters))}
    return MovieResults(movie_id=layout.movie_id, manifest=manifest, **tables)


def load_crops(movie_dir: str | os.PathLike[str], face_ids: np.ndarray) -> np.ndarray:
    """The aligned crops of ``face_ids`` (N,) as (N, 112, 112, 3) uint8 BGR, in that order.

    Raises :class:`StageError` when ``crops/`` lacks one of them.
    """
    layout = MovieLayout(Path(movie_dir))
    try:
        return read_crops(layout.crops_dir, np.asarray(face_ids, np.int64))
    except KeyError as exc:
        raise StageError(f"{layout.crops_dir}: {exc.args[0]}; re-create the crops with "
                         f"`vcn rerun {layout.root} --from tracks`") from None
    except (OSError, pa.ArrowException) as exc:
        raise StageError(f"{layout.crops_dir}: unreadable crops ({exc}); re-create them with "
                         f"`vcn rerun {layout.root} --from tracks`") from exc
