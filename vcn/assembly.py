"""Joining chunks into one movie: shots from all chunks' cuts, tracks stitched across boundaries.

Chunk ``k`` re-decodes the last frames of chunk ``k-1`` (the overlap). There both chunks saw the
same detections, so a track that crosses the boundary shows up as two local tracks sharing boxes
on the overlap frames; they are joined with a union-find. Faces in the overlap are then kept from
the earlier chunk only (``owned``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from vcn.ingest import IngestConfig
from vcn.shots import merge_cuts, shot_index, shots_from_cuts
from vcn.summary import TrackSummary, summarize_tracks
from vcn.tracking import stitch_pairs
from vcn.unionfind import DisjointSet
from vcn.video import Chunk


@dataclass
class ChunkFaces:
    """One chunk's stored faces: ``columns`` as in ``storage.schemas.CHUNK_FACES_SCHEMA``
    (``boxes`` not packed: ``x1,y1,x2,y2`` separate; ``landmarks`` (N, 5, 2)), and its cuts."""

    chunk: Chunk
    cuts: np.ndarray
    columns: dict[str, np.ndarray]
    meta: dict = field(default_factory=dict)

    def boxes(self) -> np.ndarray:
        c = self.columns
        return np.stack([c["x1"], c["y1"], c["x2"], c["y2"]], axis=1).astype(np.float32)


@dataclass
class MovieFaces:
    """A whole movie's faces (dict of (N, ...) columns, FACES_SCHEMA minus ``cluster_id``),
    its tracks, shots (S, 2) int64 ``[start, end)`` and cuts (C,) int64."""

    faces: dict[str, np.ndarray]
    tracks: TrackSummary
    shots: np.ndarray
    cuts: np.ndarray


def track_name(movie_id: str, chunk: int, local: int) -> str:
    """The stored id of a stitched track: its first chunk's tracker id, namespaced by movie."""
    return f"{movie_id}-c{chunk:05d}-t{local:05d}"


def assemble_movie(
    chunks: list[ChunkFaces], movie_id: str, n_frames: int, fps: float, cfg: IngestConfig
) -> MovieFaces:
    """Stitch ``chunks`` (in chunk order) into movie-level faces, tracks and shots."""
    cuts = merge_cuts([c.cuts for c in chunks]) if chunks else np.zeros(0, np.int64)
    shots = shots_from_cuts(cuts, max(n_frames, 1))
    # Node = (chunk, local track); offsets make them one integer range for the union-find.
    sizes = [int(c.columns["local_track"].max()) + 1 if len(c.columns["local_track"]) else 0 for c in chunks]
    offsets = np.r_[0, np.cumsum(sizes)].astype(np.int64)
    ds = DisjointSet(int(offsets[-1]))
    for k in range(1, len(chunks)):
        a, b = chunks[k - 1], chunks[k]
        pairs = stitch_pairs(
            a.columns["frame_idx"], a.boxes(), a.columns["local_track"],
            b.columns["frame_idx"], b.boxes(), b.columns["local_track"],
            b.chunk.read_start, b.chunk.start,
        )
        for ia, ib in np.asarray(pairs, np.int64).reshape(-1, 2):
            if ia >= 0 and ib >= 0:
                ds.union(int(offsets[k - 1] + ia), int(offsets[k] + ib))
    # Name every set after its earliest (chunk, local) member.
    names = np.empty(int(offsets[-1]), object)
    root_name: dict[int, str] = {}
    for k, c in enumerate(chunks):
        for local in range(sizes[k]):
            node = int(offsets[k] + local)
            root = ds.find(node)
            if root not in root_name:
                root_name[root] = track_name(movie_id, c.chunk.index, local)
            names[node] = root_name[root]
    keep_cols: dict[str, list[np.ndarray]] = {}
    track_ids: list[np.ndarray] = []
    for k, c in enumerate(chunks):
        local = c.columns["local_track"]
        keep = c.columns["owned"].astype(bool) & (local >= 0)
        for key, val in c.columns.items():
            if key not in ("local_track", "owned"):
                keep_cols.setdefault(key, []).append(val[keep])
        track_ids.append(names[offsets[k] + local[keep]] if keep.any() else np.zeros(0, object))
    if chunks:
        faces = {k: np.concatenate(v) for k, v in keep_cols.items()}
    else:
        faces = {"face_id": np.zeros(0, np.int64), "frame_idx": np.zeros(0, np.int64),
                 "embedding": np.zeros((0, 512), np.float32), "sharpness": np.zeros(0, np.float32)}
    faces["track_id"] = np.concatenate(track_ids) if track_ids else np.zeros(0, object)
    faces["shot_id"] = shot_index(faces["frame_idx"], cuts).astype(np.int32)
    order = np.lexsort((faces["face_id"],))
    faces = {k: v[order] for k, v in faces.items()}
    tracks = summarize_tracks(
        faces["track_id"], faces["frame_idx"], faces["shot_id"], faces["embedding"], faces["sharpness"]
    )
    return MovieFaces(faces=faces, tracks=tracks, shots=shots, cuts=cuts)
