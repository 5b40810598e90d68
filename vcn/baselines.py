"""Baseline clusterings to compare against: DBSCAN over faces and FINCH over tracks.

- :func:`dbscan_faces` is the clustering photo libraries use (Immich's default: DBSCAN on cosine
  distance, ``eps=0.5``, ``min_samples=3``), run on every face; a track then takes the majority
  label of its faces (:func:`track_majority`).
- :func:`finch` is FINCH (Sarfraz et al., CVPR 2019): link every item to its first (nearest)
  neighbour, take connected components, repeat on the cluster means; each repetition is one
  partition of a hierarchy, coarser than the last. No threshold; the choice is the level.

Both use numpy neighbourhoods computed in row blocks (no ``N x N`` matrix held) and scipy's
connected components; there is no scikit-learn dependency.
"""

from __future__ import annotations

import numpy as np
from scipy import sparse
from scipy.sparse.csgraph import connected_components

from vcn.errors import ConfigError, InputError
from vcn.method.clustering import first_appearance
from vcn.method.matching import check_track_index

# Bound on the entries of one block of the neighbourhood matrix (rows * columns).
_BLOCK_ENTRIES = 1 << 23


def _unit_rows(x: np.ndarray, name: str) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    if x.ndim != 2:
        raise InputError(f"{name} must have shape (N, D), got {x.shape}")
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    if not np.all(np.isfinite(x)) or np.any(norms == 0):
        raise InputError(f"{name} hold a zero or non-finite row; drop it before clustering")
    return x / norms


def _row_blocks(n_rows: int, n_cols: int):
    step = max(1, min(n_rows, _BLOCK_ENTRIES // max(n_cols, 1)))
    for lo in range(0, n_rows, step):
        yield slice(lo, min(lo + step, n_rows))


def dbscan_faces(
    embeddings: np.ndarray,
    eps: float = 0.5,
    min_samples: int = 3,
    track_index: np.ndarray | None = None,
) -> np.ndarray:
    """DBSCAN of faces on cosine distance (scikit-learn semantics).

    A face is *core* when at least ``min_samples`` faces, itself included, lie within cosine
    distance ``eps``; clusters are the connected components of core faces within ``eps`` of each
    other; a non-core face within ``eps`` of a core face joins the cluster of its nearest core
    face (scikit-learn takes the first one found); the rest are noise.

    Args:
        embeddings: ``(N, D)`` float face embeddings (normalised here).
        eps: cosine-distance radius in ``(0, 2)`` (Immich default 0.5).
        min_samples: neighbours, the face itself included, that make a core face (default 3).
        track_index: optional ``(N,)`` int track of each face; when given each face gets its
            track's majority label (:func:`track_majority`).

    Returns:
        ``(N,)`` int64 labels ``0..k-1`` by first appearance, ``-1`` for noise.
        Cost ``O(N^2 D)`` time, ``O(N D + 8M)`` memory.
    """
    if not 0.0 < eps < 2.0:
        raise ConfigError(f"dbscan eps is a cosine distance in (0, 2), got {eps}")
    if min_samples < 1:
        raise ConfigError(f"dbscan min_samples must be >= 1, got {min_samples}")
    x = _unit_rows(embeddings, "embeddings")
    n = len(x)
    sim_min = np.float32(1.0 - eps)
    counts = np.zeros(n, np.int64)
    for rows in _row_blocks(n, n):
        counts[rows] = np.count_nonzero(x[rows] @ x.T >= sim_min, axis=1)
    core = np.flatnonzero(counts >= min_samples)
    labels = np.full(n, -1, np.int64)
    if len(core):
        xc = x[core]
        n_core = len(core)
        comp = np.arange(n_core)
        # Components are joined block by block: the graph of one block's edges plus a star from
        # every node to its current component representative carries all earlier connectivity.
        for rows in _row_blocks(n_core, n_core):
            a, b = np.nonzero(xc[rows] @ xc.T >= sim_min)
            src = np.concatenate([a + rows.start, np.arange(n_core)])
            dst = np.concatenate([b, comp])
            graph = sparse.coo_matrix((np.ones(len(src), np.int8), (src, dst)), shape=(n_core, n_core))
            _, lab = connected_components(graph, directed=False)
            _, rep = np.unique(lab, return_index=True)
            comp = rep[lab]
        labels[core] = comp
        border = np.setdiff1d(np.flatnonzero(counts > 0), core)
        for rows in _row_blocks(len(border), n_core):
            idx = border[rows]
            sim = x[idx] @ xc.T
            best = np.argmax(sim, axis=1)
            near = sim[np.arange(len(idx)), best] >= sim_min
            labels[idx[near]] = comp[best[near]]
    labels = _renumber_keep_noise(labels)
    if track_index is None:
        return labels
    track_index = check_track_index(track_index, n)
    return track_majority(labels, track_index)[track_index]


def _renumber_keep_noise(labels: np.ndarray) -> np.ndarray:
    out = np.full(len(labels), -1, np.int64)
    kept = labels >= 0
    if np.any(kept):
        out[kept] = first_appearance(labels[kept])
    return out


def track_majority(face_labels: np.ndarray, track_index: np.ndarray) -> np.ndarray:
    """The most frequent label among each track's faces.

    Args:
        face_labels: ``(N,)`` int labels, ``-1`` = noise.
        track_index: ``(N,)`` int track of each face in ``0..T-1``.

    Returns:
        ``(T,)`` int64: the most frequent non-noise label (ties: the smaller label); ``-1`` when
        all of a track's faces are noise or the track has no face.
    """
    face_labels = np.asarray(face_labels, dtype=np.int64)
    track_index = check_track_index(track_index, len(face_labels))
    n_tracks = int(track_index.max()) + 1 if len(track_index) else 0
    out = np.full(n_tracks, -1, np.int64)
    kept = face_labels >= 0
    if not np.any(kept):
        return out
    pairs, counts = np.unique(np.stack([track_index[kept], face_labels[kept]], axis=1), axis=0,
                              return_counts=True)
    # Sort by track, then count descending, then label ascending; the first row per track wins.
    order = np.lexsort((pairs[:, 1], -counts, pairs[:, 0]))
    pairs = pairs[order]
    first = np.concatenate([[True], pairs[1:, 0] != pairs[:-1, 0]])
    out[pairs[first, 0]] = pairs[first, 1]
    return out


def _first_neighbours(units: np.ndarray) -> np.ndarray:
    n = len(units)
    nearest = np.empty(n, np.int64)
    for rows in _row_blocks(n, n):
        sim = units[rows] @ units.T
        sim[np.arange(rows.stop - rows.start), np.arange(rows.start, rows.stop)] = -np.inf
        nearest[rows] = np.argmax(sim, axis=1)
    return nearest


def finch_partitions(track_means: np.ndarray) -> list[np.ndarray]:
    """All FINCH partitions of the tracks, finest first, on cosine similarity.

    Args:
        track_means: ``(T, D)`` float mean embedding per track (normalised here).

    Returns:
        A list of ``(T,)`` int64 label arrays, each coarser than the one before; it stops when one
        cluster is left. Empty for ``T < 2``.
    """
    x = _unit_rows(track_means, "track_means").astype(np.float64)
    labels = np.arange(len(x), dtype=np.int64)
    sums = x
    partitions: list[np.ndarray] = []
    while len(sums) > 1:
        # Cluster means are the means of all member tracks (FINCH recomputes from the data).
        means = (sums / np.linalg.norm(sums, axis=1, keepdims=True)).astype(np.float32)
        nearest = _first_neighbours(means)
        graph = sparse.coo_matrix((np.ones(len(sums)), (np.arange(len(sums)), nearest)),
                                  shape=(len(sums), len(sums)))
        n_comp, comp = connected_components(graph, directed=False)
        member = sparse.csr_matrix((np.ones(len(comp)), (comp, np.arange(len(comp)))),
                                   shape=(n_comp, len(comp)))
        sums = member @ sums
        labels = comp[labels]
        partitions.append(first_appearance(labels))
    return partitions


def finch(track_means: np.ndarray, level: int | None = 2) -> np.ndarray:
    """FINCH clustering of tracks (cosine first neighbours).

    Args:
        track_means: ``(T, D)`` float mean embedding per track.
        level: which partition, 1 = finest (first-neighbour components); default 2, the second
            partition. A level beyond the hierarchy gives its last (coarsest) partition. ``None``:
            the coarsest partition with more than one cluster (FINCH's top level is often a
            single cluster).

    Returns:
        ``(T,)`` int64 labels ``0..k-1`` by first appearance.
    """
    if level is not None and level < 1:
        raise ConfigError(f"finch level must be >= 1 or None, got {level}")
    partitions = finch_partitions(track_means)
    if not partitions:
        return np.zeros(len(np.asarray(track_means)), np.int64)
    if level is None:
        several = [p for p in partitions if p.max() > 0]
        return several[-1] if several else partitions[-1]
    return partitions[min(level, len(partitions)) - 1]
