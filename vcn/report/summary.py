"""Per-track and per-cluster aggregates of a movie's faces.

These are the rows of ``tracks.parquet`` and ``clusters.parquet``: computed from face-level arrays
with group-by reductions (no Python loops over faces).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from vcn.method.matching import index_sums, mean_directions

UNKNOWN = "unknown"


@dataclass
class TrackSummary:
    """One row per track, ordered by first frame.

    ``track_id`` (T,) object str, ``shot_id`` (T,) int32 (shot of the first face), ``first_frame``
    and ``last_frame`` (T,) int64, ``n_faces`` (T,) int64, ``mean_embedding`` (T, 512) float32
    L2-normalised, ``quality`` (T,) float32 (median of the faces' quality).
    """

    track_id: np.ndarray
    shot_id: np.ndarray
    first_frame: np.ndarray
    last_frame: np.ndarray
    n_faces: np.ndarray
    mean_embedding: np.ndarray
    quality: np.ndarray

    def index_of(self, track_ids: np.ndarray) -> np.ndarray:
        """Row index (N,) int64 of each of ``track_ids`` in this summary."""
        lookup = {t: i for i, t in enumerate(self.track_id)}
        return np.fromiter((lookup[t] for t in track_ids), np.int64, count=len(track_ids))


def _group(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    uniq, inverse = np.unique(keys, return_inverse=True)
    return uniq, inverse.reshape(-1)


def summarize_tracks(
    track_id: np.ndarray,
    frame_idx: np.ndarray,
    shot_id: np.ndarray,
    embeddings: np.ndarray,
    quality: np.ndarray,
) -> TrackSummary:
    """Aggregate faces (N rows) into tracks.

    ``track_id`` (N,) str, ``frame_idx`` (N,) int64, ``shot_id`` (N,) int, ``embeddings`` (N, D)
    float32, ``quality`` (N,) float32.
    """
    if len(track_id) == 0:
        d = embeddings.shape[1] if embeddings.ndim == 2 else 512
        z = np.zeros(0, np.int64)
        return TrackSummary(np.zeros(0, object), z.astype(np.int32), z, z, z,
                            np.zeros((0, d), np.float32), np.zeros(0, np.float32))
    uniq, inv = _group(np.asarray(track_id, dtype=object))
    t = len(uniq)
    counts = np.bincount(inv, minlength=t)
    first = np.full(t, np.iinfo(np.int64).max, np.int64)
    last = np.full(t, -1, np.int64)
    np.minimum.at(first, inv, frame_idx)
    np.maximum.at(last, inv, frame_idx)
    means = mean_directions(embeddings, inv, t)
    # Shot of a track = shot of its first face.
    order = np.lexsort((frame_idx, inv))
    first_row = order[np.r_[0, np.flatnonzero(np.diff(inv[order])) + 1]]
    shots = np.asarray(shot_id)[first_row].astype(np.int32)
    med = _group_median(np.asarray(quality, np.float32), inv, t)
    chrono = np.argsort(first, kind="stable")
    return TrackSummary(
        track_id=uniq[chrono], shot_id=shots[chrono], first_frame=first[chrono], last_frame=last[chrono],
        n_faces=counts[chrono].astype(np.int64), mean_embedding=means[chrono].astype(np.float32),
        quality=med[chrono],
    )


def _group_median(values: np.ndarray, inv: np.ndarray, t: int) -> np.ndarray:
    order = np.lexsort((values, inv))
    starts = np.searchsorted(inv[order], np.arange(t))
    ends = np.searchsorted(inv[order], np.arange(t), side="right")
    v = values[order]
    lo, hi = v[(starts + ends - 1) // 2], v[(starts + ends) // 2]
    return ((lo + hi) / 2).astype(np.float32)


@dataclass
class ClusterSummary:
    """One row per cluster, largest first (``unknown`` last).

    ``screen_time_s`` sums, over the cluster's tracks, the track's span in seconds (first to last
    face, plus one detection step) — overlapping tracks of one person count twice, as two faces
    on screen would. ``rep_face_id`` is the face nearest the cluster's mean embedding.
    """

    cluster_id: np.ndarray
    n_tracks: np.ndarray
    n_faces: np.ndarray
    screen_time_s: np.ndarray
    first_frame: np.ndarray
    first_sec: np.ndarray
    rep_face_id: np.ndarray
    rep_track_id: np.ndarray


def summarize_clusters(
    tracks: TrackSummary,
    track_cluster: np.ndarray,
    face_id: np.ndarray,
    face_track_row: np.ndarray,
    embeddings: np.ndarray,
    fps: float,
    step_frames: int,
) -> ClusterSummary:
    """Aggregate tracks into clusters.

    ``track_cluster`` (T,) str cluster of each track row; ``face_id`` (N,) int64,
    ``face_track_row`` (N,) int64 row of each face's track in ``tracks``, ``embeddings`` (N, D).
    """
    track_cluster = np.asarray(track_cluster, dtype=object)
    if len(track_cluster) == 0:
        z = np.zeros(0, np.int64)
        return ClusterSummary(np.zeros(0, object), z, z, np.zeros(0), z, np.zeros(0), z, np.zeros(0, object))
    uniq, inv = _group(track_cluster)
    c = len(uniq)
    span = (tracks.last_frame - tracks.first_frame + step_frames) / max(fps, 1e-6)
    n_tracks = np.bincount(inv, minlength=c)
    n_faces = np.bincount(inv, weights=tracks.n_faces, minlength=c).astype(np.int64)
    screen = np.bincount(inv, weights=span, minlength=c)
    first = np.full(c, np.iinfo(np.int64).max, np.int64)
    np.minimum.at(first, inv, tracks.first_frame)
    face_cluster = inv[face_track_row]
    sums = index_sums(embeddings, face_cluster, c)
    sims = np.einsum("nd,nd->n", embeddings, sums[face_cluster])
    rep_row = np.zeros(c, np.int64)
    # Per-cluster argmax of the similarity to the cluster sum.
    order = np.lexsort((-sims, face_cluster))
    heads = order[np.r_[0, np.flatnonzero(np.diff(face_cluster[order])) + 1]]
    rep_row[face_cluster[heads]] = heads
    rank = np.lexsort((first, -n_faces, uniq == UNKNOWN))
    return ClusterSummary(
        cluster_id=uniq[rank], n_tracks=n_tracks[rank].astype(np.int64), n_faces=n_faces[rank],
        screen_time_s=screen[rank], first_frame=first[rank], first_sec=first[rank] / max(fps, 1e-6),
        rep_face_id=np.asarray(face_id)[rep_row][rank],
        rep_track_id=tracks.track_id[face_track_row[rep_row]][rank],
    )


def cluster_names(labels: np.ndarray, track_faces: np.ndarray) -> np.ndarray:
    """Name integer cluster labels (T,) as ``person_000``, ``person_001``... by decreasing face
    count; label -1 becomes ``unknown``. Returns (T,) object str."""
    labels = np.asarray(labels, np.int64)
    names = np.full(len(labels), UNKNOWN, object)
    valid = labels >= 0
    if not valid.any():
        return names
    uniq, inv = np.unique(labels[valid], return_inverse=True)
    sizes = np.bincount(inv, weights=np.asarray(track_faces)[valid], minlength=len(uniq))
    rank = np.empty(len(uniq), np.int64)
    rank[np.argsort(-sizes, kind="stable")] = np.arange(len(uniq))
    names[valid] = np.array([f"person_{r:03d}" for r in rank], object)[inv]
    return names
