"""Parquet schemas of a movie's outputs and conversions between tables and arrays.

The output contract (README, "Output contract") is defined here and nowhere else:

* ``faces.parquet``: one row per kept face detection.
* ``tracks.parquet``: one row per track.
* ``shots.parquet``: one row per shot.
* ``clusters.parquet``: one row per cluster (``unknown`` included when it has tracks).
* ``chunks/chunk-NNNNN.faces.parquet``: one chunk's faces before stitching (internal).
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

EMBED_DIM = 512
UNKNOWN = "unknown"

_EMB = pa.list_(pa.float32(), EMBED_DIM)
_LMK = pa.list_(pa.float32(), 10)

FACE_FIELDS = [
    ("face_id", pa.int64()),
    ("frame_idx", pa.int64()),
    ("t_sec", pa.float64()),
    ("x1", pa.float32()),
    ("y1", pa.float32()),
    ("x2", pa.float32()),
    ("y2", pa.float32()),
    ("det_score", pa.float32()),
    ("landmarks", _LMK),
    ("sharpness", pa.float32()),
    ("yaw", pa.float32()),
    ("second_look", pa.bool_()),
    ("embedding", _EMB),
]

CHUNK_FACES_SCHEMA = pa.schema([*FACE_FIELDS, ("local_track", pa.int64()), ("owned", pa.bool_())])

FACES_SCHEMA = pa.schema(
    [*FACE_FIELDS, ("shot_id", pa.int32()), ("track_id", pa.string()), ("cluster_id", pa.string())]
)

TRACKS_SCHEMA = pa.schema(
    [
        ("track_id", pa.string()),
        ("shot_id", pa.int32()),
        ("first_frame", pa.int64()),
        ("last_frame", pa.int64()),
        ("n_faces", pa.int64()),
        ("mean_embedding", _EMB),
        ("quality", pa.float32()),
        ("cluster_id", pa.string()),
    ]
)

SHOTS_SCHEMA = pa.schema(
    [
        ("shot_id", pa.int32()),
        ("start_frame", pa.int64()),
        ("end_frame", pa.int64()),
        ("start_sec", pa.float64()),
        ("end_sec", pa.float64()),
    ]
)

CLUSTERS_SCHEMA = pa.schema(
    [
        ("cluster_id", pa.string()),
        ("n_tracks", pa.int64()),
        ("n_faces", pa.int64()),
        ("screen_time_s", pa.float64()),
        ("first_frame", pa.int64()),
        ("first_sec", pa.float64()),
        ("rep_face_id", pa.int64()),
        ("rep_track_id", pa.string()),
    ]
)


def fixed_list(values: np.ndarray, width: int) -> pa.FixedSizeListArray:
    """Pack a (N, width) float array as a fixed_size_list<float32>[width] column."""
    flat = np.ascontiguousarray(values, dtype=np.float32).reshape(-1)
    return pa.FixedSizeListArray.from_arrays(pa.array(flat, pa.float32()), width)


def unpack_list(column: pa.ChunkedArray | pa.Array, width: int) -> np.ndarray:
    """Inverse of :func:`fixed_list`: (N, width) float32."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks() if column.num_chunks else pa.array([], column.type)
    if len(column) == 0:
        return np.zeros((0, width), np.float32)
    return column.values.to_numpy(zero_copy_only=False).astype(np.float32).reshape(-1, width)


def table_from_columns(schema: pa.Schema, columns: dict[str, Any], metadata: dict | None = None) -> pa.Table:
    """Build a table of ``schema`` from numpy columns.

    ``landmarks`` (N, 5, 2), ``embedding`` and ``mean_embedding`` (N, 512) are packed as fixed-size
    lists; ``metadata`` is stored as JSON under the schema key ``vcn``.
    """
    arrays = []
    for field in schema:
        value = columns[field.name]
        if pa.types.is_fixed_size_list(field.type):
            arrays.append(fixed_list(np.asarray(value), field.type.list_size))
        else:
            arrays.append(pa.array(np.asarray(value) if not isinstance(value, list) else value, field.type))
    table = pa.Table.from_arrays(arrays, schema=schema)
    if metadata is not None:
        table = table.replace_schema_metadata({"vcn": json.dumps(metadata, default=str)})
    return table


def table_metadata(table_or_path: pa.Table | str) -> dict:
    """Return the JSON metadata stored by :func:`table_from_columns` (empty dict when none)."""
    schema = pq.read_schema(table_or_path) if isinstance(table_or_path, str) else table_or_path.schema
    raw = (schema.metadata or {}).get(b"vcn")
    return json.loads(raw) if raw else {}


def columns_from_table(table: pa.Table) -> dict[str, np.ndarray]:
    """Return a table's columns as numpy arrays; list columns unpacked to 2-D/3-D arrays."""
    out: dict[str, np.ndarray] = {}
    for field in table.schema:
        col = table[field.name]
        if pa.types.is_fixed_size_list(field.type):
            arr = unpack_list(col, field.type.list_size)
            out[field.name] = arr.reshape(-1, 5, 2) if field.name == "landmarks" else arr
        else:
            out[field.name] = col.to_numpy(zero_copy_only=False)
    return out
