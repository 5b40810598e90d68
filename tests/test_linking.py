"""vcn.linking: a fragment joins its larger nearest cluster within that cluster's extent, a
guest's cluster with too little extent joins nothing, and no join crosses a cannot-link."""

from __future__ import annotations

import numpy as np

from vcn.linking import link_fragments


def _tracks(angles_deg: list[float]) -> np.ndarray:
    a = np.radians(angles_deg)
    return np.stack([np.cos(a), np.sin(a), np.zeros_like(a)], axis=1)


def test_a_fragment_within_the_leads_extent_joins_it() -> None:
    # The lead's tracks span -30..30 degrees around 0; its fragment sits at 25 degrees.
    sums = _tracks([-30, -10, 0, 10, 30, 25, 120])
    labels = link_fragments(sums, np.array([0, 0, 0, 0, 0, 1, 2]), np.zeros((0, 2), np.int64))
    assert labels.tolist() == [0, 0, 0, 0, 0, 0, 1]


def test_beyond_the_extent_or_into_a_smaller_cluster_nothing_joins() -> None:
    # The lead spans +-10 degrees, the fragment lies at 40; a two-track guest at 100-102 has a
    # one-track neighbour at 110, nearer than its own extent allows.
    sums = _tracks([-10, 0, 10, 40, 100, 102, 110])
    labels = link_fragments(sums, np.array([0, 0, 0, 1, 2, 2, 3]), np.zeros((0, 2), np.int64))
    assert labels.tolist() == [0, 0, 0, 1, 2, 2, 3]


def test_no_join_crosses_a_cannot_link() -> None:
    sums = _tracks([-30, 0, 30, 25])
    labels = np.array([0, 0, 0, 1])
    assert link_fragments(sums, labels, np.zeros((0, 2), np.int64)).tolist() == [0, 0, 0, 0]
    # The fragment's track was seen on one frame with one of the lead's tracks.
    assert link_fragments(sums, labels, np.array([[1, 3]])).tolist() == [0, 0, 0, 1]
