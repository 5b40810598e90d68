"""vcn.linking: mutual first neighbours link below the closest cannot-linked pair, never across a
cannot-link, and nothing links in a video that shows no two people on one frame."""

from __future__ import annotations

import numpy as np

from vcn.linking import link_clusters


def _directions(angles_deg: list[float]) -> np.ndarray:
    a = np.radians(angles_deg)
    return np.stack([np.cos(a), np.sin(a), np.zeros_like(a)], axis=1)


def test_fragments_of_one_person_link_below_the_cannot_link_bound() -> None:
    # Person A in three looks (0, 20, 35 degrees), person B at 90 and 100; B's first look was
    # seen on one frame with A's second look: two people are at least ~70 degrees apart here.
    sums = _directions([0, 20, 35, 90, 100]) * np.array([[5], [3], [2], [4], [1]])
    labels = link_clusters(sums, np.array([[1, 3]]))
    assert labels.tolist() == [0, 0, 0, 1, 1]


def test_no_cannot_link_means_no_bound_and_no_link() -> None:
    sums = _directions([0, 5, 90])
    assert link_clusters(sums, np.zeros((0, 2), np.int64)).tolist() == [0, 1, 2]


def test_a_pair_as_far_as_the_closest_two_people_stays_apart() -> None:
    # Guests: 0 and 40 degrees are each other's first neighbours, but two people seen together
    # are 40 degrees apart too, so nothing says they are one person.
    sums = _directions([0, 40, 120, 160])
    labels = link_clusters(sums, np.array([[2, 3]]))
    assert labels.tolist() == [0, 1, 2, 3]


def test_links_never_join_a_cannot_link_through_a_chain() -> None:
    # 0-10 and 10-20 are both close; 0 and 20 were seen together, so only one link stands.
    sums = _directions([0, 10, 20, 90]) * np.array([[1], [1], [1], [1]])
    labels = link_clusters(sums, np.array([[0, 2], [0, 3]]))
    assert labels[0] != labels[2]
    assert len(set(labels.tolist())) >= 3
