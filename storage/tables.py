"""A title's tables on disk: chunk faces, then faces, tracks and shots, then the clusters, read
and written with their schemas (:mod:`vcn.storage.schemas`), atomically.

A chunk's faces file is its completion record: it is written last, after the chunk's crops, and
its metadata holds the chunk, its cuts, decode counts, timings and the stage hash it was made
under.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from vcn.faces.assembly import ChunkFaces, MovieFaces
from vcn.media.video import Chunk
from vcn.report.summary import ClusterSummary, TrackSummary
from vcn.storage import schemas
from vcn.storage.atomic import write_parquet
from vcn.storage.layout import MovieLayout


def write_chunk_faces(layout: MovieLayout, index: int, columns: dict[str, Any],
                      metadata: dict[str, Any]) -> None:
    """Write chunk ``index``'s faces (``CHUNK_FACES_SCHEMA`` columns) with its ``metadata``."""
    table = schemas.table_from_columns(schemas.CHUNK_FACES_SCHEMA, columns, metadata=metadata)
    write_parquet(layout.chunk_faces(index), table)


def chunk_metadata(layout: MovieLayout, index: int) -> dict[str, Any] | None:
    """Chunk ``index``'s metadata, or None when its faces or crops are not both on disk."""
    path = layout.chunk_faces(index)
    if not (path.exists() and layout.chunk_crops(index).exists()):
        return None
    return schemas.table_metadata(str(path))


def read_chunk_faces(layout: MovieLayout, index: int) -> ChunkFaces:
    """Chunk ``index``'s faces as the arrays stitching needs."""
    table = pq.read_table(layout.chunk_faces(index))
    meta = schemas.table_metadata(table)
    return ChunkFaces(chunk=Chunk(**meta["chunk"]), cuts=np.asarray(meta["cuts"], np.int64),
                      columns=schemas.columns_from_table(table), meta=meta)


def write_title_tables(layout: MovieLayout, movie: MovieFaces, fps: float) -> None:
    """Write the stitched title's ``faces``, ``tracks`` and ``shots`` tables, every cluster id
    ``unknown`` until the clusters stage sets them."""
    faces = movie.faces
    write_parquet(layout.faces, schemas.table_from_columns(schemas.FACES_SCHEMA, {
        **faces, "landmarks": faces["landmarks"].reshape(-1, 10),
        "cluster_id": np.full(len(faces["face_id"]), schemas.UNKNOWN, object),
    }))
    tr = movie.tracks
    write_parquet(layout.tracks, schemas.table_from_columns(schemas.TRACKS_SCHEMA, {
        "track_id": tr.track_id, "shot_id": tr.shot_id, "first_frame": tr.first_frame,
        "last_frame": tr.last_frame, "n_faces": tr.n_faces, "mean_embedding": tr.mean_embedding,
        "quality": tr.quality, "cluster_id": np.full(len(tr.track_id), schemas.UNKNOWN, object),
    }))
    shots = movie.shots
    write_parquet(layout.shots, schemas.table_from_columns(schemas.SHOTS_SCHEMA, {
        "shot_id": np.arange(len(shots), dtype=np.int32),
        "start_frame": shots[:, 0], "end_frame": shots[:, 1],
        "start_sec": shots[:, 0] / fps, "end_sec": shots[:, 1] / fps,
    }))


def read_face_columns(layout: MovieLayout, columns: list[str]) -> dict[str, np.ndarray]:
    """The named columns of the title's ``faces.parquet`` as arrays."""
    return schemas.columns_from_table(pq.read_table(layout.faces, columns=columns))


def read_track_ids(layout: MovieLayout) -> list[str]:
    """The title's track ids in ``tracks.parquet`` order (the row numbers the method uses)."""
    return pq.read_table(layout.tracks, columns=["track_id"]).column(0).to_pylist()


def read_tracks(layout: MovieLayout) -> TrackSummary:
    """The title's ``tracks.parquet`` as a :class:`TrackSummary` (rows in file order)."""
    c = schemas.columns_from_table(pq.read_table(layout.tracks))
    return TrackSummary(
        track_id=c["track_id"].astype(object), shot_id=c["shot_id"], first_frame=c["first_frame"],
        last_frame=c["last_frame"], n_faces=c["n_faces"], mean_embedding=c["mean_embedding"],
        quality=c["quality"],
    )


def _with_column(table: pa.Table, name: str, values: pa.Array) -> pa.Table:
    return table.set_column(table.schema.get_field_index(name), name, values)


def write_clusters(layout: MovieLayout, face_cluster: np.ndarray, track_cluster: np.ndarray,
                   quality: np.ndarray, clusters: ClusterSummary) -> None:
    """Write a clustering: ``cluster_id`` of every face (F,) and track (T,) in file order, the
    tracks' ``quality`` (T,) float32, and ``clusters.parquet`` from ``clusters``; each file
    atomically, ``clusters.parquet`` last."""
    faces = pq.read_table(layout.faces)
    write_parquet(layout.faces, _with_column(faces, "cluster_id", pa.array(list(face_cluster), pa.string())))
    tracks = _with_column(pq.read_table(layout.tracks), "cluster_id",
                          pa.array(list(track_cluster), pa.string()))
    write_parquet(layout.tracks, _with_column(tracks, "quality", pa.array(quality, pa.float32())))
    write_parquet(layout.clusters, schemas.table_from_columns(schemas.CLUSTERS_SCHEMA, vars(clusters)))
