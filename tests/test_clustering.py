"""HAC, parameter-free clustering (cosine, Euclidean) and the baselines, on synthetic data."""

from __future__ import annotations

import numpy as np
import pytest

from vcn.baselines import dbscan_faces, finch, finch_partitions, track_majority
from vcn.errors import ConfigError, InputError
from vcn.method.clustering import hac, parameter_free, parameter_free_embedding
from vcn.method.set_distance import CosineDistance, EuclideanDistance, embedding_track_stats
from vcn.method.thresholds import (
    group_spread_floor,
    in_quality_range,
    own_thresholds,
    robust_thresholds,
    view_thresholds_embedding,
)


def unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def make_tracks(
    rng: np.random.Generator,
    tracks_per_identity: list[int],
    dim: int = 64,
    face_spread: float = 0.5,
    track_spread: float = 0.0,
    faces: tuple[int, int] = (4, 12),
    views: int = 0,
    view_spread: float = 0.5,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
    """Blobs on the sphere: identity centre -> track centre -> faces (-> augmented views).

    Returns ``(embeddings (N, dim) float32, track_index (N,), identity per track (T,),
    views (N, V, dim) or None)``; view 0 is the face itself.
    """
    centres = unit(rng.normal(size=(len(tracks_per_identity), dim)))
    emb, index, ident = [], [], []
    for person, n_tracks in enumerate(tracks_per_identity):
        for _ in range(n_tracks):
            centre = unit(centres[person] + track_spread * rng.normal(size=dim) / np.sqrt(dim))
            n = int(rng.integers(faces[0], faces[1] + 1))
            emb.append(unit(centre + face_spread * rng.normal(size=(n, dim)) / np.sqrt(dim)))
            index += [len(ident)] * n
            ident.append(person)
    x = np.concatenate(emb)
    multi = None
    if views:
        noise = view_spread * rng.normal(size=(len(x), views, dim)) / np.sqrt(dim)
        multi = unit(x[:, None, :] + noise)
        multi[:, 0] = x
        multi = multi.astype(np.float32)
    return x.astype(np.float32), np.array(index), np.array(ident), multi


def same_partition(a: np.ndarray, b: np.ndarray) -> bool:
    pairs = np.unique(np.stack([a, b], axis=1), axis=0)
    return len(pairs) == len(np.unique(a)) == len(np.unique(b))


# ---------------------------------------------------------------- HAC


def test_hac_two_groups_and_degenerate_sizes() -> None:
    rng = np.random.default_rng(0)
    x, index, ident, _ = make_tracks(rng, [4, 4], face_spread=0.3)
    means = np.stack([x[index == t].mean(0) for t in range(8)])
    labels = hac(means, threshold=0.5)
    assert labels.dtype == np.int64
    assert same_partition(labels, ident)
    assert hac(means[:1]).tolist() == [0]
    assert hac(np.zeros((0, 8))).shape == (0,)
    with pytest.raises(ConfigError, match="cosine distance"):
        hac(means, threshold=2.5)


# ---------------------------------------------------------------- distance models


def brute_mean_distance(fn, a: np.ndarray, b: np.ndarray) -> float:
    return float(np.mean([fn(i, j) for i in a for j in b]))


def test_models_equal_brute_force_pairs() -> None:
    rng = np.random.default_rng(1)
    x, index, _, _ = make_tracks(rng, [2, 1], dim=16, faces=(1, 5))
    sets = [np.flatnonzero(index == t) for t in range(3)]
    models = {
        "cosine": (embedding_track_stats(x, index, "cosine"), CosineDistance(),
                   lambda i, j: 1 - float(x[i] @ x[j])),
        "euclidean": (embedding_track_stats(2 * x, index, "euclidean"), EuclideanDistance(),
                      lambda i, j: float(np.sum((2 * x[i] - 2 * x[j]) ** 2))),
    }
    for stats, model, fn in models.values():
        left, right, offset = model.bilinear(stats)
        cross = offset[:, None] + offset[None, :] + left @ right.T
        own = own_thresholds(stats, model)
        for a in range(3):
            for b in range(3):
                if a != b:
                    assert cross[a, b] == pytest.approx(brute_mean_distance(fn, sets[a], sets[b]), abs=1e-5)
            distinct = [(i, j) for i in sets[a] for j in sets[a] if i != j]
            if distinct:
                assert own[a] == pytest.approx(np.mean([fn(i, j) for i, j in distinct]), abs=1e-5)
            else:
                assert np.isnan(own[a])


# ---------------------------------------------------------------- parameter-free clustering


def test_parameter_free_cosine_recovers_identities() -> None:
    rng = np.random.default_rng(2)
    x, index, ident, _ = make_tracks(rng, [6, 5, 4, 3, 1])
    labels = parameter_free_embedding(x, index, "cosine")
    assert labels.dtype == np.int64 and labels.shape == ident.shape
    assert same_partition(labels, ident)
    # Euclidean on unit vectors is twice the cosine distance, thresholds included.
    np.testing.assert_array_equal(parameter_free_embedding(x, index, "euclidean"), labels)


def test_paper_thresholds_fail_on_near_duplicates_views_fix_it() -> None:
    """Still-photo tracks: faces inside a track are near-identical, tracks of one person are not."""
    rng = np.random.default_rng(4)
    x, index, ident, views = make_tracks(rng, [5, 5, 4, 3], face_spread=0.05, track_spread=0.3, views=4)
    stats = embedding_track_stats(x, index, "cosine")
    own = own_thresholds(stats, CosineDistance())
    paper = parameter_free(stats, CosineDistance(), own).labels
    assert len(np.unique(paper)) > 2 * len(np.unique(ident))  # merges (almost) nothing
    tau = view_thresholds_embedding(views, index, "cosine")
    assert np.all(tau > 3 * own)
    fixed = parameter_free_embedding(x, index, "cosine", track_thresholds=tau)
    assert same_partition(fixed, ident)


def test_median_floor_repairs_static_tracks_among_moving_ones() -> None:
    rng = np.random.default_rng(5)
    moving = make_tracks(rng, [4, 4, 4], face_spread=0.5, faces=(6, 12))
    static_x = []
    for person in range(3):
        # Two static tracks per person: near-copies of one face drawn from the moving tracks.
        base = moving[0][moving[1] == 4 * person]
        for k in range(2):
            face = base[k]
            static_x.append(unit(face + 0.01 * rng.normal(size=(5, face.size))))
    x = np.concatenate([moving[0], *static_x]).astype(np.float32)
    index = np.concatenate([moving[1], 12 + np.repeat(np.arange(6), 5)])
    ident = np.concatenate([moving[2], np.repeat(np.arange(3), 2)])
    stats = embedding_track_stats(x, index, "cosine")
    own = own_thresholds(stats, CosineDistance())
    assert np.all(own[12:] < 0.2 * np.median(own[:12]))
    labels = parameter_free_embedding(x, index, "cosine")
    assert same_partition(labels, ident)


def test_one_huge_identity_ends_correctly() -> None:
    rng = np.random.default_rng(6)
    x, index, ident, _ = make_tracks(rng, [200, 1, 1, 1, 1, 1], faces=(2, 8))
    result = parameter_free(embedding_track_stats(x, index, "cosine"), CosineDistance())
    assert same_partition(result.labels, ident)
    assert len(result.rounds) <= 10
    assert result.rounds[-1].links == 0


def test_identical_and_single_face_tracks() -> None:
    rng = np.random.default_rng(7)
    a, b = unit(rng.normal(size=(2, 32)))
    x = np.concatenate([np.tile(a, (4, 1)), np.tile(a, (3, 1)), np.tile(b, (5, 1)), b[None]])
    index = np.repeat([0, 1, 2, 3], [4, 3, 5, 1])
    labels = parameter_free_embedding(x, index, "cosine")
    np.testing.assert_array_equal(labels, [0, 0, 1, 1])
    # One track, one face: one cluster.
    assert parameter_free_embedding(x[:1], np.zeros(1, np.int64)).tolist() == [0]


def test_robust_thresholds_and_input_errors() -> None:
    own = np.array([0.1, np.nan, 0.3, 0.02])
    np.testing.assert_allclose(robust_thresholds(own), [0.1, 0.1, 0.3, 0.1])
    assert np.all(robust_thresholds(np.array([np.nan, np.nan])) == -np.inf)
    x = unit(np.random.default_rng(8).normal(size=(4, 8)))
    with pytest.raises(InputError, match="every track id"):
        parameter_free_embedding(x, np.array([0, 0, 2, 2]))
    with pytest.raises(ConfigError, match="metric"):
        parameter_free_embedding(x, np.array([0, 0, 1, 1]), metric="manhattan")
    with pytest.raises(InputError, match=r"\(2,\)"):
        parameter_free_embedding(x, np.array([0, 0, 1, 1]), track_thresholds=np.ones(3))


def test_group_spread_floor_lifts_lone_tracks_only() -> None:
    thr = np.array([0.40, 0.70, 0.60, np.nan, 0.90, 0.50])
    sizes = np.array([1, 3, 2, 1, 1, 4])
    # Floor = median of the multi-track groups' thresholds (0.70, 0.60, 0.50) = 0.60.
    np.testing.assert_allclose(group_spread_floor(thr, sizes), [0.60, 0.70, 0.60, 0.60, 0.90, 0.50])
    # No group spans two tracks: nothing was measured across shots, nothing changes.
    np.testing.assert_array_equal(group_spread_floor(thr[[0, 4]], np.ones(2, int)), thr[[0, 4]])
    with pytest.raises(InputError, match="group_sizes"):
        group_spread_floor(thr, sizes[:3])


def test_group_spread_floor_is_lent_only_within_the_groups_quality_range() -> None:
    thr = np.array([0.40, 0.70, 0.60, 0.45, 0.90, 0.50, 0.30])
    sizes = np.array([1, 3, 2, 1, 1, 4, 1])
    # Lowest quality among the multi-track groups' tracks: 0.54 (group 2's weakest track).
    quality = np.array([0.56, 0.58, 0.54, 0.53, 0.50, 0.60, np.nan])
    out = group_spread_floor(thr, sizes, quality)
    # Group 0 is inside the range and is lifted to 0.60; groups 3 and 6 lie below it (or have
    # no quality) and keep their own; group 4's own threshold is above the floor anyway.
    np.testing.assert_allclose(out, [0.60, 0.70, 0.60, 0.45, 0.90, 0.50, 0.30])
    # At the range's edge the floor is lent (>=).
    np.testing.assert_allclose(group_spread_floor(thr, sizes, np.where(sizes > 1, quality, 0.54))[[0, 3]],
                               [0.60, 0.60])
    with pytest.raises(InputError, match="group_quality"):
        group_spread_floor(thr, sizes, quality[:3])


def test_quality_range_keeps_two_confused_low_quality_shots_apart() -> None:
    # Person C in two matched shots sets the floor. Person D in two lone sharp shots, and two
    # lone wide shots of two people (A, B) that a weak recognizer puts as near each other as
    # D's two shots. Only the lone tracks of lower quality than every matched track are
    # refused the floor, so D's shots merge and A and B do not.
    rng = np.random.default_rng(5)
    a, b, c, d, e, g = unit(rng.normal(size=(6, 64)))
    group_c = np.concatenate([np.tile(c, (4, 1)), np.tile(unit(c + 0.9 * e), (4, 1))])
    shots = [a, unit(a + 0.5 * b), d, unit(d + 0.5 * g)]
    x = np.concatenate([group_c, *[np.tile(v, (4, 1)) for v in shots]])
    index = np.repeat([0, 1, 2, 3, 4], [8, 4, 4, 4, 4])
    stats = embedding_track_stats(x, index, "cosine")
    thr = np.array([own_thresholds(stats, CosineDistance())[0], 0.01, 0.01, 0.01, 0.01])
    assert 1 - shots[0] @ shots[1] < thr[0]  # the ungated floor merges A and B
    sizes = np.array([2, 1, 1, 1, 1])
    ungated = parameter_free(stats, CosineDistance(), group_spread_floor(thr, sizes)).labels
    np.testing.assert_array_equal(ungated, [0, 1, 1, 2, 2])
    quality = np.array([0.56, 0.52, 0.53, 0.57, 0.58])
    gated = parameter_free(stats, CosineDistance(), group_spread_floor(thr, sizes, quality)).labels
    np.testing.assert_array_equal(gated, [0, 1, 2, 3, 3])


def test_spread_floor_joins_two_lone_shots_of_one_person_and_not_a_stranger() -> None:
    # Person C appears in two matched shots (one group, its threshold holds the spread between
    # shots); person A in two lone static shots of different takes, near-duplicate inside; a
    # stranger B in one lone shot. Lone tracks' own thresholds are tiny.
    rng = np.random.default_rng(3)
    a, b, c, e, f = unit(rng.normal(size=(5, 64)))
    group_c = np.concatenate([np.tile(c, (4, 1)), np.tile(unit(c + 0.9 * e), (4, 1))])
    x = np.concatenate([group_c, np.tile(a, (4, 1)), np.tile(unit(a + 0.5 * f), (4, 1)), np.tile(b, (4, 1))])
    index = np.repeat([0, 1, 2, 3], [8, 4, 4, 4])
    stats = embedding_track_stats(x, index, "cosine")
    thr = np.array([own_thresholds(stats, CosineDistance())[0], 0.01, 0.01, 0.01])
    d_aa = 1 - a @ unit(a + 0.5 * f)
    assert thr[0] > d_aa + 0.02  # the video's cross-shot spread admits A's second take ...
    assert 1 - a @ b > thr[0] + 0.5  # ... and not the stranger
    plain = parameter_free(stats, CosineDistance(), thr).labels
    floored = parameter_free(stats, CosineDistance(), group_spread_floor(thr, np.array([2, 1, 1, 1]))).labels
    np.testing.assert_array_equal(plain, [0, 1, 2, 3])
    np.testing.assert_array_equal(floored, [0, 1, 1, 2])


def test_in_quality_range_edges() -> None:
    thr = np.array([0.40, 0.70, 0.60, 0.45, np.nan])
    sizes = np.array([1, 3, 2, 1, 1])
    quality = np.array([0.55, 0.58, 0.54, 0.53, 0.60])
    # Range starts at the multi-track groups' lowest quality (0.54); NaN quality is never in.
    np.testing.assert_array_equal(in_quality_range(thr, sizes, quality), [True, True, True, False, True])
    np.testing.assert_array_equal(in_quality_range(thr, sizes, np.where(sizes > 1, quality, np.nan)),
                                  [False, True, True, False, False])
    # No multi-track group: nothing to measure a range on, every finite quality is in.
    lone = in_quality_range(thr[[0, 3]], np.ones(2, int), quality[[0, 3]])
    np.testing.assert_array_equal(lone, [True, True])
    with pytest.raises(InputError, match="group_quality"):
        in_quality_range(thr, sizes[:2], quality)


# ---------------------------------------------------------------- baselines


def naive_dbscan(x: np.ndarray, eps: float, min_samples: int) -> np.ndarray:
    """Textbook DBSCAN by breadth-first expansion (reference for the blocked version)."""
    near = (1 - unit(x) @ unit(x).T) <= eps + 1e-6
    core = near.sum(1) >= min_samples
    labels = np.full(len(x), -1)
    current = 0
    for i in np.flatnonzero(core):
        if labels[i] >= 0:
            continue
        labels[i] = current
        queue = [i]
        while queue:
            j = queue.pop()
            if not core[j]:
                continue
            for k in np.flatnonzero(near[j]):
                if labels[k] < 0:
                    labels[k] = current
                    queue.append(k)
        current += 1
    return labels


def test_dbscan_matches_reference_and_majority() -> None:
    rng = np.random.default_rng(9)
    x, index, ident, _ = make_tracks(rng, [3, 3, 2], face_spread=0.6, faces=(3, 6))
    outliers = unit(rng.normal(size=(4, x.shape[1]))).astype(np.float32)
    x = np.concatenate([x, outliers])
    labels = dbscan_faces(x, eps=0.5, min_samples=3)
    ref = naive_dbscan(x, 0.5, 3)
    core_or_noise = ref >= 0
    assert same_partition(labels[core_or_noise], ref[core_or_noise])
    np.testing.assert_array_equal(labels < 0, ref < 0)
    assert np.all(labels[-4:] == -1)
    index = np.concatenate([index, index.max() + 1 + np.arange(4)])
    face_labels = dbscan_faces(x, track_index=index)
    per_track = track_majority(face_labels, index)
    assert same_partition(per_track[: len(ident)], ident)
    assert np.all(per_track[len(ident):] == -1)


def test_track_majority_ignores_noise_and_breaks_ties_low() -> None:
    labels = np.array([2, 2, -1, -1, -1, 1, 0, 1, 0, -1])
    index = np.array([0, 0, 0, 0, 0, 1, 1, 1, 1, 2])
    np.testing.assert_array_equal(track_majority(labels, index), [2, 0, -1])


def test_finch_levels() -> None:
    rng = np.random.default_rng(10)
    x, index, ident, _ = make_tracks(rng, [8, 8, 8], face_spread=0.3, track_spread=0.4)
    means = np.stack([x[index == t].mean(0) for t in range(len(ident))])
    parts = finch_partitions(means)
    sizes = [len(np.unique(p)) for p in parts]
    assert sizes == sorted(sizes, reverse=True) and sizes[0] <= len(ident) // 2 and sizes[-1] == 1
    # Coarser levels only merge: each level-1 cluster lies inside one level-2 cluster.
    assert len(np.unique(np.stack([parts[0], parts[1]], axis=1), axis=0)) == sizes[0]
    assert same_partition(finch(means, level=None), ident)
    np.testing.assert_array_equal(finch(means, level=99), parts[-1])
    assert finch(means[:1]).tolist() == [0]
