"""Cannot-link constraints: co-occurring tracks, vetoed matches, constrained merging."""

from __future__ import annotations

import numpy as np
import pytest
from test_clustering import make_tracks, unit

from vcn.errors import InputError
from vcn.method.clustering import parameter_free, parameter_free_embedding
from vcn.method.constraints import ConstrainedMerger, consistent_pairs, cooccurring_pairs, drop_pairs
from vcn.method.set_distance import CosineDistance, embedding_track_stats


def test_cooccurring_pairs_from_frames() -> None:
    frames = np.array([0, 0, 0, 1, 1, 2, 3, 3])
    tracks = np.array([0, 1, 2, 0, 3, 1, 4, 4])  # track 4 twice on frame 3: no self pair
    np.testing.assert_array_equal(cooccurring_pairs(frames, tracks), [[0, 1], [0, 2], [0, 3], [1, 2]])
    # Order of the faces does not matter.
    perm = np.random.default_rng(0).permutation(len(frames))
    shuffled = cooccurring_pairs(frames[perm], tracks[perm])
    np.testing.assert_array_equal(shuffled, cooccurring_pairs(frames, tracks))
    assert cooccurring_pairs(np.array([5]), np.array([0])).shape == (0, 2)
    with pytest.raises(InputError):
        cooccurring_pairs(np.zeros(3), np.zeros(2, np.int64))


def test_drop_pairs_in_either_order() -> None:
    pairs = np.array([[0, 1], [2, 5], [3, 4]])
    np.testing.assert_array_equal(drop_pairs(pairs, np.array([[5, 2]])), [[0, 1], [3, 4]])
    np.testing.assert_array_equal(drop_pairs(pairs, np.zeros((0, 2))), pairs)


def test_merger_vetoes_transitive_violations() -> None:
    m = ConstrainedMerger(5, np.array([[0, 2], [3, 4]]))
    assert m.union(0, 1)
    assert not m.union(1, 2)  # 1 is with 0, and 0 may not meet 2
    assert m.union(2, 3)
    assert not m.union(1, 3)  # group {0, 1} conflicts with group {2, 3} through (0, 2)
    assert m.union(4, 0)  # {4} may join {0, 1}: its conflict is with 3 ...
    assert not m.union(2, 1)  # ... which now keeps {2, 3} away through two constraints
    assert not m.union(1, 1)
    np.testing.assert_array_equal(m.groups(), [0, 0, 1, 1, 0])


def test_consistent_pairs_keep_the_closer_of_two_conflicting_matches() -> None:
    # Tracks 0 and 1 are seen together; both matched track 2. Only the closer match can stand.
    pairs = np.array([[0, 2], [1, 2], [3, 4], [0, 1]])
    dist = np.array([0.5, 0.2, 0.3, 0.9])
    kept = consistent_pairs(pairs, dist, 5, np.array([[0, 1]]))
    np.testing.assert_array_equal(kept, [[1, 2], [3, 4]])
    # A redundant pair inside an accepted group stays (it is consistent).
    chain = np.array([[0, 1], [1, 2], [0, 2]])
    kept = consistent_pairs(chain, np.array([0.1, 0.2, 0.3]), 4, np.array([[2, 3]]))
    assert len(kept) == 3
    np.testing.assert_array_equal(consistent_pairs(pairs, dist, 5, np.zeros((0, 2))), pairs)


def _loose_bridge(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Three people with two tight tracks each and one wide track between them all.

    The wide track (tiny, blurred faces) has a threshold that admits every other track, so the
    paper's "either threshold" rule chains the three people together through it.
    """
    x, index, ident, _ = make_tracks(rng, [2, 2, 2], dim=32, face_spread=0.3, faces=(6, 6))
    centre = unit(x.mean(axis=0))
    wide = unit(centre + 2.0 * rng.normal(size=(30, 32)) / np.sqrt(32))
    x = np.concatenate([x, wide]).astype(np.float32)
    index = np.concatenate([index, np.full(30, 6)])
    # People are seen together in every shot: all their cross-person track pairs co-occur.
    cannot = np.array([(a, b) for a in range(6) for b in range(a + 1, 6) if ident[a] != ident[b]])
    return x, index, ident, cannot


def test_cannot_links_stop_a_loose_track_from_chaining_people() -> None:
    x, index, ident, cannot = _loose_bridge(np.random.default_rng(3))
    free = parameter_free_embedding(x, index, "cosine")
    assert len(np.unique(free)) == 1  # the failure mode seen on the pedestrians clip
    kept = parameter_free_embedding(x, index, "cosine", cannot_link=cannot)
    np.testing.assert_array_equal(kept[:6] == kept[0], ident == ident[0])
    assert len(np.unique(kept[:6])) == 3
    for a, b in cannot:
        assert kept[a] != kept[b]


def test_constraints_hold_on_random_data_and_rounds_end() -> None:
    rng = np.random.default_rng(11)
    x, index, _, _ = make_tracks(rng, [5, 4, 3, 1, 1], dim=16, face_spread=0.8, track_spread=0.6)
    stats = embedding_track_stats(x, index, "cosine")
    n = len(stats)
    cannot = np.unique(np.sort(rng.integers(0, n, size=(20, 2)), axis=1), axis=0)
    cannot = cannot[cannot[:, 0] != cannot[:, 1]]
    result = parameter_free(stats, CosineDistance(), cannot_link=cannot)
    assert all(result.labels[a] != result.labels[b] for a, b in cannot)
    assert len(result.rounds) <= n
    with pytest.raises(InputError):
        parameter_free(stats, CosineDistance(), cannot_link=np.array([[0, n]]))


def test_grow_matches_closes_groups_and_respects_cannot_links() -> None:
    from vcn.method.grouping import grow_matches, mutual_nearest
    from vcn.method.matching import MatchingConfig, coarse_matches

    rng = np.random.default_rng(5)
    _, index, ident, views = make_tracks(rng, [4, 4, 3], dim=32, face_spread=0.4, track_spread=0.5,
                                         faces=(3, 6), views=4, view_spread=0.6)
    emb = views.reshape(-1, 32)
    v_index = np.repeat(index, 4)
    cfg = MatchingConfig(mutual=True)
    nearest = {tuple(p) for p in mutual_nearest(emb, v_index, np.zeros((0, 2), np.int64)).tolist()}
    first = [p for p in coarse_matches(emb, v_index, cfg).tolist() if tuple(p) in nearest]
    grown = grow_matches(emb, v_index, cfg, np.zeros((0, 2), np.int64))
    as_set = {tuple(p) for p in grown.tolist()}
    assert {tuple(p) for p in first} <= as_set  # round 1: the paper's matching, mutual nearest
    assert len(grown) > len(first)  # groups matched what single tracks did not
    assert all(ident[a] == ident[b] for a, b in grown)  # well-separated people: no wrong link
    # Transitively closed: every two tracks of a group are a pair.
    for a, b in grown:
        for c in range(len(ident)):
            if c not in (a, b) and ((min(a, c), max(a, c)) in as_set):
                assert (min(b, c), max(b, c)) in as_set
    # Forbid two tracks of the first person from meeting: they end in different groups.
    cannot = np.array([[0, 1]])
    kept = {tuple(p) for p in grow_matches(emb, v_index, cfg, cannot).tolist()}
    assert (0, 1) not in kept


def test_grow_matches_never_links_groups_wider_apart_than_its_track_matches() -> None:
    """Two people, two tracks each: round 0 pairs each person's tracks; the two groups' Gaussians
    then admit each other (and, two groups only, they are mutual nearest), but they lie farther
    apart than the widest track match, so growth refuses them."""
    from vcn.method.grouping import group_distances, grow_matches
    from vcn.method.matching import MatchingConfig, coarse_matches

    rng = np.random.default_rng(0)
    dim, cfg, none = 16, MatchingConfig(mutual=True), np.zeros((0, 2), np.int64)
    a, b = np.eye(dim)[0], np.cos(0.5) * np.eye(dim)[0] + np.sin(0.5) * np.eye(dim)[1]
    emb, index = [], []
    for t, centre in enumerate([a, a, b, b]):
        track = unit(centre + 0.15 * rng.standard_normal(dim) / np.sqrt(dim))
        emb += [unit(track + 0.5 * rng.standard_normal(dim) / np.sqrt(dim)) for _ in range(6)]
        index += [t] * 6
    emb, index = np.array(emb), np.array(index)
    person = np.array([0, 0, 1, 1])[index]
    assert coarse_matches(emb, person, cfg).tolist() == [[0, 1]]  # the Gaussian rule alone joins them
    widest = group_distances(emb, index, np.array([[0, 1], [2, 3]])).max()
    assert group_distances(emb, person, np.array([[0, 1]]))[0] > widest
    assert grow_matches(emb, index, cfg, none).tolist() == [[0, 1], [2, 3]]


def test_group_distances_are_mean_pairwise_cosine() -> None:
    from vcn.method.grouping import group_distances

    rng = np.random.default_rng(1)
    emb = unit(rng.standard_normal((7, 5)))
    group = np.array([0, 0, 1, 1, 1, 2, 2])
    got = group_distances(emb, group, np.array([[0, 1], [2, 0]]))
    brute = [np.mean(1 - emb[group == g] @ emb[group == h].T) for g, h in ((0, 1), (2, 0))]
    np.testing.assert_allclose(got, brute)


def test_mutual_nearest_keeps_one_partner_and_skips_cannot_links() -> None:
    """A hub between two people is near both; only its nearest partner, if mutual, pairs."""
    from vcn.method.grouping import mutual_nearest

    a, hub, c = np.eye(3)[0], np.array([0.6, 0.8, 0.0]), np.eye(3)[1]
    emb = np.stack([a, a, hub, c, c])
    group = np.array([0, 0, 1, 2, 2])
    # nearest(0) = 1, nearest(1) = 2 (0.8 > 0.6), nearest(2) = 1: only (1, 2) is mutual.
    assert mutual_nearest(emb, group, np.zeros((0, 2), np.int64)).tolist() == [[1, 2]]
    # With 1 and 2 known to be two people, the hub's nearest allowed group is 0.
    assert mutual_nearest(emb, group, np.array([[2, 1]])).tolist() == [[0, 1]]
    # A group whose every other group is forbidden has no neighbour.
    assert mutual_nearest(emb[:3], group[:3], np.array([[0, 1]])).shape == (0, 2)
    assert mutual_nearest(emb[:2], group[:2], np.zeros((0, 2))).shape == (0, 2)


def test_group_pairs_maps_track_pairs_onto_distinct_groups() -> None:
    from vcn.method.constraints import group_pairs

    group = np.array([0, 0, 1, 2])
    # (0, 1) is inside group 0; (1, 3) and (3, 0) are both groups 0-2: one pair.
    assert group_pairs(np.array([[0, 1], [1, 3], [3, 0], [2, 3]]), group).tolist() == [[0, 2], [1, 2]]
    assert group_pairs(np.zeros((0, 2), np.int64), group).shape == (0, 2)


def test_voted_matches_keep_the_pairs_a_majority_of_draws_make() -> None:
    from vcn.method.grouping import voted_matches

    means = np.eye(6)
    none = np.zeros((0, 2), np.int64)
    # 0-1 in all three draws, 2-3 in two, 4-5 in one: a majority (2 of 3) keeps the first two.
    draws = [np.array([[0, 1], [2, 3], [4, 5]]), np.array([[0, 1], [2, 3]]), np.array([[1, 0]])]
    assert voted_matches(draws, 6, 2, means, none).tolist() == [[0, 1], [2, 3]]
    assert voted_matches(draws, 6, 3, means, none).tolist() == [[0, 1]]
    assert voted_matches(draws, 6, 1, means, none).tolist() == [[0, 1], [2, 3], [4, 5]]
    # Votes count pairs of a draw's groups, not its listed links: {0, 1, 2} in draw 1 is 0-2 too.
    chain = [np.array([[0, 1], [1, 2]]), np.array([[0, 2]]), none]
    assert voted_matches(chain, 6, 2, means, none).tolist() == [[0, 2]]


def test_voted_matches_close_the_kept_pairs_without_joining_a_cannot_link() -> None:
    from vcn.method.grouping import voted_matches

    # 0-1 voted by draws 1 and 2, 1-2 by draws 2 and 3, never 0-2 together in one draw: closing
    # the majority pairs would put 0 and 2 in one group, and they share a frame. The pair with
    # the closer means (0-1) is applied first, so 1-2 is the one skipped.
    draws = [np.array([[0, 1]]), np.array([[0, 1], [3, 4]]), np.array([[1, 2], [3, 4]]), np.array([[1, 2]])]
    means = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [1.0, 0.0], [1.0, 0.0]])
    means /= np.linalg.norm(means, axis=1, keepdims=True)
    assert voted_matches(draws, 5, 2, means, np.zeros((0, 2), np.int64)).tolist() == [
        [0, 1], [0, 2], [1, 2], [3, 4]]
    assert voted_matches(draws, 5, 2, means, np.array([[2, 0]])).tolist() == [[0, 1], [3, 4]]
    # More votes go first even when farther: with 1-2 in three draws, 0-1 is the one skipped.
    more = [*draws, np.array([[2, 1]])]
    assert voted_matches(more, 5, 2, means, np.array([[2, 0]])).tolist() == [[1, 2], [3, 4]]


def test_voted_matches_with_every_draw_are_the_pairs_every_draw_has() -> None:
    """For transitively closed matchings (as grow_matches returns), a quorum of every draw keeps
    exactly the pairs every draw has: the meet of their partitions."""
    from vcn.errors import ConfigError
    from vcn.method.grouping import pairs_within_groups, voted_matches

    rng = np.random.default_rng(3)
    for _ in range(20):
        n = int(rng.integers(2, 30))
        draws = [pairs_within_groups(rng.integers(0, int(rng.integers(1, n + 1)), n)) for _ in range(3)]
        means = rng.normal(size=(n, 4))
        means /= np.linalg.norm(means, axis=1, keepdims=True)
        got = voted_matches(draws, n, 3, means, np.zeros((0, 2), np.int64))
        every = set.intersection(*({tuple(p) for p in d.tolist()} for d in draws))
        assert {tuple(p) for p in got.tolist()} == every
        # One draw is that draw's matching, unchanged.
        assert voted_matches(draws[:1], n, 1, means, np.zeros((0, 2), np.int64)).tolist() == draws[0].tolist()
    for quorum in (0, 4):
        with pytest.raises(ConfigError, match="quorum"):
            voted_matches(draws, n, quorum, means, np.zeros((0, 2), np.int64))
    with pytest.raises(ConfigError, match="match_draws"):
        voted_matches([], n, 1, means, np.zeros((0, 2), np.int64))
