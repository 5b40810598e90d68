"""Merge thresholds of tracks and clusters for parameter-free clustering.

A track's own threshold is the spread of its faces; tracks of static shots or still photos are
near-duplicates inside, so that spread merges nothing. Thresholds are therefore measured between
*augmented views* of a track's faces (:func:`view_thresholds_embedding`: the mean distance over
pairs of distinct (face, view) items, so a one-face track gets one too), with views as strong as
the finetune's: they measure the model's nuisance scale, which is nearly constant across videos,
not the shot's motion (docs/method.md, departure 3). Without views a track's threshold is floored
at the median own threshold of the tracks with two or more faces.

Across shots (:func:`group_spread_floor`): views of one shot cannot show how another take, pose or
light moves a person's embedding, while a group of tracks that coarse matching joined across
shots holds that spread in its threshold. Lone tracks within the quality range of the groups'
tracks take the median threshold of the multi-track groups as a floor (departure 5).
"""

from __future__ import annotations

import numpy as np

from vcn.errors import InputError
from vcn.method.matching import check_track_index
from vcn.method.set_distance import DistanceModel, distance_model, embedding_track_stats


def own_thresholds(stats: np.ndarray, model: DistanceModel) -> np.ndarray:
    """``(C,)`` mean distance between each set's own faces (pairs ``a != b``); NaN for 1 face."""
    n = stats[:, 0]
    pairs = n * (n - 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(pairs > 0, model.pair_total(stats) / np.where(pairs > 0, pairs, 1), np.nan)


def robust_thresholds(own: np.ndarray) -> np.ndarray:
    """The default ``tau_t`` without views: each track's own threshold floored at the median.

    Args:
        own: ``(T,)`` float own thresholds, NaN for one-face tracks.

    Returns:
        ``(T,)`` float64 ``max(own_t, median)``; one-face tracks get the median. When no track
        has two faces every value is ``-inf`` (nothing can be learnt about spread: no merges).
    """
    finite = own[np.isfinite(own)]
    if len(finite) == 0:
        return np.full(len(own), -np.inf)
    floor = float(np.median(finite))
    return np.where(np.isfinite(own), np.maximum(own, floor), floor)


def group_spread_floor(
    thresholds: np.ndarray, group_sizes: np.ndarray, group_quality: np.ndarray | None = None
) -> np.ndarray:
    """Lone tracks borrow the cross-shot spread measured on the video's matched groups.

    A group that coarse matching built from tracks of several shots carries the spread between
    shots (pose, light, framing, a different take) in its view threshold; a lone track's views
    can only show how one shot varies under augmentation. Each lone track's threshold is
    therefore floored at the median threshold of the multi-track groups of the same video: a
    statistic of the video itself, not a knob. Multi-track groups keep their own threshold.

    With ``group_quality`` the floor is lent only inside the quality range it was measured on:
    a lone track whose quality is below that of every track in the multi-track groups keeps
    its own threshold. Such a track (a tiny, dark or blurred face) is one for which this video
    has shown no cross-shot distance at all, and it is where the recognizer confuses people
    (docs/method.md: every wrong floor merge measured had such a track).

    Args:
        thresholds: ``(G,)`` float threshold per matched group (NaN: a one-item group).
        group_sizes: ``(G,)`` int tracks in each group.
        group_quality: optional ``(G,)`` float quality of each group's lowest-quality track
            (the track's own for a lone group, e.g. SER-FIQ medians,
            :func:`vcn.method.track_quality.track_quality`); NaN never lends.

    Returns:
        ``(G,)`` float64 thresholds; unchanged when no group spans two tracks (nothing was
        measured across shots). NaN lone thresholds that are lent become the floor.
    """
    thr = np.asarray(thresholds, dtype=np.float64)
    sizes = np.asarray(group_sizes)
    if thr.shape != sizes.shape or thr.ndim != 1:
        raise InputError(f"thresholds {thr.shape} and group_sizes {sizes.shape} must be equal (G,) arrays")
    spans = (sizes > 1) & np.isfinite(thr)
    if not spans.any():
        return thr
    floor = float(np.median(thr[spans]))
    lend = sizes == 1
    if group_quality is not None:
        lend &= in_quality_range(thr, sizes, group_quality)
    return np.where(lend, np.fmax(thr, floor), thr)


def in_quality_range(
    thresholds: np.ndarray, group_sizes: np.ndarray, group_quality: np.ndarray
) -> np.ndarray:
    """``(G,)`` bool: groups whose quality is at least that of every track in the multi-track
    groups the spread floor is measured on (:func:`group_spread_floor`; arguments as there).
    Multi-track groups are in range by construction; NaN quality never is; with no multi-track
    group every finite quality is."""
    thr = np.asarray(thresholds, dtype=np.float64)
    sizes = np.asarray(group_sizes)
    quality = np.asarray(group_quality, dtype=np.float64)
    if quality.shape != thr.shape or sizes.shape != thr.shape:
        raise InputError(f"group_quality {quality.shape} must have the shape of thresholds {thr.shape}")
    measured = quality[(sizes > 1) & np.isfinite(thr)]
    lowest = float(np.min(measured[np.isfinite(measured)], initial=np.inf)) if len(measured) else -np.inf
    return quality >= lowest  # NaN compares false


def _check_views(arr: np.ndarray, name: str) -> np.ndarray:
    arr = np.asarray(arr)
    if arr.ndim != 3 or arr.shape[1] < 1:
        raise InputError(f"{name} must have shape (N, V, K) with V >= 1 views per face, got {arr.shape}")
    return arr


def view_thresholds_embedding(
    views: np.ndarray, track_index: np.ndarray, metric: str = "cosine"
) -> np.ndarray:
    """Within-track embedding thresholds from augmented views.

    Args:
        views: ``(N, V, D)`` float embeddings of ``V`` augmented views per face.
        track_index: ``(N,)`` int track of each face.
        metric: ``cosine`` or ``euclidean``.

    Returns:
        ``(T,)`` float64 mean distance over ordered pairs of distinct (face, view) items of a
        track; NaN where a track has a single item.
    """
    v = _check_views(views, "views")
    n_faces, n_views, dim = v.shape
    items = np.repeat(check_track_index(track_index, n_faces), n_views)
    stats = embedding_track_stats(v.reshape(-1, dim), items, metric)
    return own_thresholds(stats, distance_model(metric))
