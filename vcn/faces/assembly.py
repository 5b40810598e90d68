"""Joining chunks into one movie: shots from all chunks' cuts, tracks stitched across boundaries.

Chunk ``k`` re-decodes the last frames of chunk ``k-1`` (the overlap). There both chunks saw the
same detections, so a track that crosses the boundary shows up as two local tracks sharing boxes
on the overlap frames; ``vcn.faces.stitching`` joins them. Faces in the overlap are then kept from the
earlier chunk only.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from vcn.faces.ingest import IngestConfig
from vcn.faces.stitching import join_chunk_tracks
from vcn.media.shots import merge_cuts, shot_index, shots_from_cuts
from vcn.media.video import Chunk, VideoInfo, check_decoded, decode_warning
from vcn.report.summary import TrackSummary, summarize_tracks


@dataclass
class ChunkFaces:
    """One chunk's stored faces: ``columns`` as in ``vcn.storage.schemas.CHUNK_FACES_SCHEMA``
    (``boxes`` not packed: ``x1,y1,x2,y2`` separate; ``landmarks`` (N, 5, 2)), and its cuts."""

    chunk: Chunk
    cuts: np.ndarray
    columns: dict[str, np.ndarray]
    meta: dict = field(default_factory=dict)

    def boxes(self) -> np.ndarray:
        c = self.columns
        return np.stack([c["x1"], c["y1"], c["x2"], c["y2"]], axis=1).astype(np.float32)


@dataclass(frozen=True)
class DecodeReport:
    """What decoding a whole title met: the frames its container declares (the measured count when
    it declares none), the frames its chunks decoded in their own ranges, the undecodable packets
    they skipped and the first decoder error; ``warning``: one line when any were lost."""

    declared_frames: int
    decoded_frames: int
    bad_packets: int
    first_error: str | None
    warning: str | None

    @property
    def missing_frames(self) -> int:
        return max(0, self.declared_frames - self.decoded_frames)

    def to_dict(self) -> dict:
        return {"declared_frames": self.declared_frames, "decoded_frames": self.decoded_frames,
                "missing_frames": self.missing_frames, "bad_packets": self.bad_packets,
                "first_error": self.first_error}


def check_title_decode(chunks: list[ChunkFaces], info: VideoInfo) -> DecodeReport:
    """Compare the frames the chunks decoded (``owned_frames``, ``bad_packets`` and
    ``decode_error`` of their metadata) with what the title's container declares.

    Raises :class:`~vcn.errors.TruncatedVideoError` or :class:`~vcn.errors.CorruptVideoError`
    (see :func:`vcn.media.video.check_decoded`) when the title lost more than a few frames or packets.
    """
    decoded = sum(int(c.meta.get("owned_frames", c.chunk.end - c.chunk.start)) for c in chunks)
    bad = sum(int(c.meta.get("bad_packets", 0)) for c in chunks)
    first_error = next((c.meta["decode_error"] for c in chunks if c.meta.get("decode_error")), None)
    declared = info.declared_frames if info.declared_frames is not None else info.n_frames
    exact = info.declared_exact if info.declared_frames is not None else True
    check_decoded(info.path, decoded, declared, info.fps, exact=exact, bad_packets=bad, error=first_error)
    warning = decode_warning(info.path, decoded, declared, bad)
    return DecodeReport(declared, decoded, bad, first_error, warning)


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
    stitched = join_chunk_tracks(
        [c.columns["frame_idx"] for c in chunks], [c.boxes() for c in chunks],
        [c.columns["local_track"] for c in chunks],
        np.array([c.chunk.start for c in chunks], np.int64),
        np.array([c.chunk.read_start for c in chunks], np.int64),
        min_track_faces=cfg.tracker.min_track_faces,
    )
    names = np.array(
        [track_name(movie_id, chunks[k].chunk.index, local) for k, local in stitched.roots], dtype=object
    )
    keep_cols: dict[str, list[np.ndarray]] = {}
    track_ids: list[np.ndarray] = []
    for k, c in enumerate(chunks):
        labels = stitched.labels[k]
        keep = stitched.keep[k] & (labels >= 0)
        for key, val in c.columns.items():
            if key not in ("local_track", "owned"):
                keep_cols.setdefault(key, []).append(val[keep])
        track_ids.append(names[labels[keep]])
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
