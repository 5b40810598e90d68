"""vcn.method.linking: a fragment joins its nearest larger cluster when it lies nearer than anyone seen
on screen beside that cluster; a cluster with too few co-occurrences takes nobody; no join
crosses a cannot-link."""

from __future__ import annotations

import numpy as np

from vcn.method.linking import attach_tracks, cooccurrence_bounds, link_fragments


def _tracks(angles_deg: list[float]) -> np.ndarray:
    a = np.radians(angles_deg)
    return np.stack([np.cos(a), np.sin(a), np.zeros_like(a)], axis=1)


def _pairs(*pairs: tuple[int, int]) -> np.ndarray:
    return np.array(pairs, np.int64).reshape(-1, 2)


# A lead of four tracks around 0 degrees, each seen on one frame with one of a co-star's four
# tracks around 90 degrees; one more track at 130 degrees, and lone fragments after them.
LEAD = [-10, -5, 5, 10]
COSTAR = [80, 85, 95, 100]
TOGETHER = _pairs((0, 4), (1, 5), (2, 6), (3, 7))


def test_a_fragment_nearer_than_the_co_star_joins_the_lead() -> None:
    sums = _tracks(LEAD + COSTAR + [40])
    labels = np.array([0] * 4 + [1] * 4 + [2])
    assert link_fragments(sums, labels, TOGETHER).tolist() == [0] * 4 + [1] * 4 + [0]


def test_a_fragment_as_far_as_the_co_star_stays_apart() -> None:
    # At -85 degrees the fragment lies farther from the lead's mean (1 - cos 85 = 0.91) than
    # the co-star's nearest track does (1 - cos 80 = 0.83).
    sums = _tracks(LEAD + COSTAR + [-85])
    labels = np.array([0] * 4 + [1] * 4 + [2])
    assert link_fragments(sums, labels, TOGETHER).tolist() == [0] * 4 + [1] * 4 + [2]


def test_a_cluster_with_thin_evidence_takes_nobody() -> None:
    # Two-track clusters seen beside one one-track partner each: their evidence (one
    # co-occurring track) is fewer than the title's other clusters (six).
    sums = _tracks([0, 2, 170, 90, 92, 260, 30, 120, 200])
    labels = np.array([0, 0, 2, 1, 1, 3, 4, 5, 6])
    together = _pairs((0, 2), (3, 5))
    bounds = cooccurrence_bounds(sums, labels, _unit_means(sums, labels), _together(together, labels))
    assert np.isneginf(bounds[:2]).all()
    assert link_fragments(sums, labels, together).tolist() == labels.tolist()


def test_a_fragment_looks_only_at_its_nearest_larger_cluster() -> None:
    # The fragment's nearest larger cluster (B, at 40) has no trusted bound; the lead farther
    # away would admit it, but a fragment never passes over its nearest candidate.
    sums = _tracks(LEAD + COSTAR + [50, 52, 45])
    labels = np.array([0] * 4 + [1] * 4 + [2, 2, 3])
    out = link_fragments(sums, labels, TOGETHER)
    assert out[10] != out[0]


def test_no_join_crosses_a_cannot_link() -> None:
    sums = _tracks(LEAD + COSTAR + [40])
    labels = np.array([0] * 4 + [1] * 4 + [2])
    # The fragment was seen on one frame with one of the lead's tracks.
    out = link_fragments(sums, labels, np.vstack([TOGETHER, _pairs((0, 8))]))
    assert out[8] != out[0]


def _unit_means(sums: np.ndarray, labels: np.ndarray) -> np.ndarray:
    m = np.zeros((labels.max() + 1, sums.shape[1]))
    np.add.at(m, labels, sums / np.linalg.norm(sums, axis=1, keepdims=True))
    return m / np.linalg.norm(m, axis=1, keepdims=True)


def _together(pairs: np.ndarray, labels: np.ndarray) -> np.ndarray:
    n = labels.max() + 1
    t = np.zeros((n, n), bool)
    a, b = labels[pairs[:, 0]], labels[pairs[:, 1]]
    t[a, b] = t[b, a] = True
    return t


def test_no_bound_is_looser_than_the_titles_typical_stranger() -> None:
    # The lead's only co-star stands far off (150 degrees), so its own bound is loose (1.82);
    # two other people seen together 15 degrees apart make the title's median bound 0.90. A
    # fragment 100 degrees from the lead (1.17) lies within the loose bound, not the median.
    sums = _tracks([-5, -2, 2, 5, 145, 148, 152, 155, 85, 88, 92, 95, 105, 108, 112, 115, -100])
    labels = np.array([0] * 4 + [1] * 4 + [2] * 4 + [3] * 4 + [4])
    together = _pairs((0, 4), (1, 5), (2, 6), (3, 7), (8, 12), (9, 13), (10, 14), (11, 15))
    bounds = cooccurrence_bounds(sums, labels, _unit_means(sums, labels), _together(together, labels))
    assert bounds[0] < 1.0 - np.cos(np.radians(100)) < 1.0 - np.cos(np.radians(145))
    assert link_fragments(sums, labels, together).tolist() == labels.tolist()


def test_a_set_aside_track_joins_its_nearest_tracks_cluster_within_that_tracks_threshold() -> None:
    units = _tracks(LEAD + COSTAR + [20, 60, 140])
    labels = np.array([0] * 4 + [1] * 4 + [-1] * 3)
    thresholds = np.full(11, 1 - np.cos(np.radians(15)))  # within 15 degrees
    out = attach_tracks(units, labels, thresholds, np.array([8, 9, 10]), _pairs())
    # 20 deg is 10 from the lead's track at 10; 60 is 20 from the co-star's at 80; 140 is far
    assert out.tolist() == [0] * 4 + [1] * 4 + [0, -1, -1]


def test_a_set_aside_track_never_joins_a_cluster_it_shares_a_frame_with() -> None:
    units = _tracks(LEAD + COSTAR + [12, 14])
    labels = np.array([0] * 4 + [1] * 4 + [-1, -1])
    thresholds = np.full(10, 1 - np.cos(np.radians(15)))
    # 12 shares a frame with the lead's track at -10; 14 with 12, which it would otherwise follow
    out = attach_tracks(units, labels, thresholds, np.array([8, 9]), _pairs((8, 0)))
    assert out[8] == -1 and out[9] == 0
    out = attach_tracks(units, labels, thresholds, np.array([8, 9]), _pairs((8, 9)))
    assert out[8] == 0 and out[9] == -1  # the nearer one is placed first and bars the other


def test_a_set_aside_track_within_two_clusters_thresholds_stays_unknown() -> None:
    units = _tracks(LEAD + COSTAR + [45, 20])
    labels = np.array([0] * 4 + [1] * 4 + [-1, -1])
    thresholds = np.full(10, 1 - np.cos(np.radians(40)))  # within 40 degrees
    # 45 lies 35 from the lead's track at 10 and 35 from the co-star's at 80: either person;
    # 20 lies 10 from the lead's track and 60 from the co-star's: the lead's
    out = attach_tracks(units, labels, thresholds, np.array([8, 9]), _pairs())
    assert out[8] == -1 and out[9] == 0
