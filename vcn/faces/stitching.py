"""Stitching tracks across chunk boundaries.

Chunks are tracked independently. Chunk ``k`` also decodes the overlap ``[read_start, start)``
that chunk ``k-1`` owns, with identical detections there, so tracks that share detections in the
overlap are the same track (:func:`stitch_pairs`, :func:`join_chunk_tracks`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.optimize import linear_sum_assignment

from vcn.errors import ConfigError, InputError
from vcn.faces.boxes import box_iou
from vcn.unionfind import DisjointSet


def stitch_pairs(
    frames_a: np.ndarray,
    boxes_a: np.ndarray,
    ids_a: np.ndarray,
    frames_b: np.ndarray,
    boxes_b: np.ndarray,
    ids_b: np.ndarray,
    lo: int,
    hi: int,
    iou_min: float = 0.5,
) -> np.ndarray:
    """Pair the tracks of chunk ``a`` with those of the next chunk ``b`` that share faces.

    Both chunks detected the same faces on the overlap frames ``[lo, hi)``; a face of ``a`` and one
    of ``b`` on the same frame with IoU ``>= iou_min`` are the same detection, and their tracks are
    one track. Each ``b`` track is paired with at most one ``a`` track, the one it shares most
    frames with (ties: the smaller ``a`` id), so one wrong link in ``b`` cannot merge two tracks of
    ``a``; an ``a`` track may pair with several ``b`` tracks (``b`` starts cold and may fragment).

    Args:
        frames_a, frames_b: ``(Na,)``, ``(Nb,)`` int64 frame of each face.
        boxes_a, boxes_b: ``(Na, 4)``, ``(Nb, 4)`` float32 x1, y1, x2, y2 pixels.
        ids_a, ids_b: ``(Na,)``, ``(Nb,)`` int64 track ids local to each chunk; -1 faces are ignored.
        lo, hi: the overlap, frames ``lo <= f < hi``.
        iou_min: IoU from which two faces on the same frame count as one detection.

    Returns:
        ``(M, 2)`` int64 pairs ``(id_a, id_b)``, sorted by ``id_b``.
    """
    frames_a = np.asarray(frames_a, dtype=np.int64).reshape(-1)
    frames_b = np.asarray(frames_b, dtype=np.int64).reshape(-1)
    ids_a = np.asarray(ids_a, dtype=np.int64).reshape(-1)
    ids_b = np.asarray(ids_b, dtype=np.int64).reshape(-1)
    boxes_a = np.asarray(boxes_a, dtype=np.float32).reshape(-1, 4)
    boxes_b = np.asarray(boxes_b, dtype=np.float32).reshape(-1, 4)
    if not len(frames_a) == len(boxes_a) == len(ids_a) or not len(frames_b) == len(boxes_b) == len(ids_b):
        raise InputError("stitch_pairs: frames, boxes and ids of a chunk must have one row per face")

    in_a = (frames_a >= lo) & (frames_a < hi) & (ids_a >= 0)
    in_b = (frames_b >= lo) & (frames_b < hi) & (ids_b >= 0)
    votes: dict[tuple[int, int], int] = {}
    for frame in np.intersect1d(frames_a[in_a], frames_b[in_b]):
        rows_a = np.flatnonzero(in_a & (frames_a == frame))
        rows_b = np.flatnonzero(in_b & (frames_b == frame))
        iou = box_iou(boxes_a[rows_a], boxes_b[rows_b])
        for r, c in zip(*linear_sum_assignment(-iou), strict=True):
            if iou[r, c] >= iou_min:
                key = (int(ids_a[rows_a[r]]), int(ids_b[rows_b[c]]))
                votes[key] = votes.get(key, 0) + 1

    best: dict[int, tuple[int, int]] = {}
    for (id_a, id_b), n in votes.items():
        current = best.get(id_b)
        if current is None or (n, -id_a) > (current[1], -current[0]):
            best[id_b] = (id_a, n)
    pairs = [(id_a, id_b) for id_b, (id_a, _) in sorted(best.items())]
    return np.array(pairs, dtype=np.int64).reshape(-1, 2)


@dataclass(frozen=True)
class StitchedTracks:
    """Tracks of consecutive chunks joined into global tracks by :func:`join_chunk_tracks`.

    Attributes:
        labels: per chunk, ``(N_k,)`` int64 global track of each face, ``0..G-1`` numbered by each
            track's first (chunk, local id); -1 for faces that had no local track or whose global
            track is shorter than the threshold.
        keep: per chunk, ``(N_k,)`` bool, False for faces in ``[read_start, start)``, which repeat
            faces the previous chunk owns.
        roots: ``(G, 2)`` int64 (chunk index, local track id) of the first local track of each
            global track, for naming it after that chunk's id.
    """

    labels: tuple[np.ndarray, ...]
    keep: tuple[np.ndarray, ...]
    roots: np.ndarray


def join_chunk_tracks(
    frames: Sequence[np.ndarray],
    boxes: Sequence[np.ndarray],
    ids: Sequence[np.ndarray],
    starts: np.ndarray,
    read_starts: np.ndarray,
    iou_min: float = 0.5,
    min_track_faces: int = 1,
) -> StitchedTracks:
    """Join the local tracks of consecutive chunks into global tracks.

    Chunk ``k`` owns frames ``[starts[k], starts[k+1])`` and also tracked ``[read_starts[k],
    starts[k])``, which chunk ``k-1`` owns; tracks sharing faces there are linked
    (:func:`stitch_pairs`) and the links applied transitively, so a track may span many chunks.
    With an overlap of at least ``TrackerConfig.max_gap_frames`` the result equals tracking the
    whole video at once, save where a chunk's cold start resolves an ambiguity differently.

    Args:
        frames: per chunk, ``(N_k,)`` int64 frame of each face.
        boxes: per chunk, ``(N_k, 4)`` float32 x1, y1, x2, y2 pixels.
        ids: per chunk, ``(N_k,)`` int64 local track ids (-1: no track).
        starts: ``(K,)`` int64 first frame each chunk owns, increasing.
        read_starts: ``(K,)`` int64 first frame each chunk decoded, ``<= starts``.
        iou_min: IoU from which faces of two chunks on one frame are the same detection.
        min_track_faces: global tracks with fewer kept faces get label -1 (counted after
            dropping the duplicated overlap faces).

    Returns:
        :class:`StitchedTracks` with one labels array and one keep mask per chunk.
    """
    if min_track_faces < 1:
        raise ConfigError(f"join_chunk_tracks: min_track_faces={min_track_faces}; use 1 to keep every track")
    starts = np.asarray(starts, dtype=np.int64).reshape(-1)
    read_starts = np.asarray(read_starts, dtype=np.int64).reshape(-1)
    n_chunks = len(starts)
    if not len(frames) == len(boxes) == len(ids) == len(read_starts) == n_chunks:
        raise InputError(
            f"join_chunk_tracks: got {len(frames)} frames, {len(boxes)} boxes, {len(ids)} ids, "
            f"{n_chunks} starts and {len(read_starts)} read_starts; pass one of each per chunk"
        )
    if np.any(read_starts > starts) or np.any(np.diff(starts) <= 0):
        raise InputError("join_chunk_tracks: need increasing starts and read_starts <= starts per chunk")
    frames = [np.asarray(f, dtype=np.int64).reshape(-1) for f in frames]
    ids = [np.asarray(i, dtype=np.int64).reshape(-1) for i in ids]

    # Local track j of chunk k is element offsets[k] + j of one disjoint-set forest.
    counts = np.array([int(i.max()) + 1 if len(i) else 0 for i in ids], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(counts)])
    forest = DisjointSet(int(offsets[-1]))
    for k in range(1, n_chunks):
        pairs = stitch_pairs(
            frames[k - 1], boxes[k - 1], ids[k - 1],
            frames[k], boxes[k], ids[k],
            int(read_starts[k]), int(starts[k]), iou_min,
        )  # fmt: skip
        for id_a, id_b in pairs:
            forest.union(int(offsets[k - 1] + id_a), int(offsets[k] + id_b))

    element_label = forest.labels()
    ends = np.append(starts[1:], np.iinfo(np.int64).max)
    keep = tuple((f >= s) & (f < e) for f, s, e in zip(frames, starts, ends, strict=True))
    labels = []
    for k in range(n_chunks):
        lab = np.full(len(ids[k]), -1, dtype=np.int64)
        has = ids[k] >= 0
        lab[has] = element_label[offsets[k] + ids[k][has]]
        labels.append(lab)

    # Count each global track's kept faces; tracks below the threshold, and labels of local ids
    # that never occur, vanish from a dense renumbering that keeps the first-appearance order.
    n_labels = int(element_label.max()) + 1 if len(element_label) else 0
    kept = np.concatenate([lab[m & (lab >= 0)] for lab, m in zip(labels, keep, strict=True)] + [[]])
    used = np.bincount(kept.astype(np.int64), minlength=n_labels) >= min_track_faces
    remap = np.where(used, np.cumsum(used) - 1, -1)
    labels = [np.where(lab >= 0, remap[np.maximum(lab, 0)], -1) if len(remap) else lab for lab in labels]

    roots = np.full((int(used.sum()), 2), -1, dtype=np.int64)
    for k in reversed(range(n_chunks)):
        for j in np.unique(ids[k][ids[k] >= 0])[::-1]:
            g = remap[element_label[offsets[k] + j]]
            if g >= 0:
                roots[g] = (k, j)
    return StitchedTracks(labels=tuple(labels), keep=keep, roots=roots)
