"""Coarse track matching on synthetic embeddings with known identities."""

from __future__ import annotations

import numpy as np
import pytest
from test_clustering import make_tracks as blobs
from test_clustering import unit

from vcn.errors import ConfigError, InputError
from vcn.method.matching import MatchingConfig, _maha_blocks, coarse_matches, fit_track_gaussians


def make_tracks(
    rng: np.random.Generator,
    tracks_per_identity: list[int],
    dim: int = 128,
    face_spread: float = 0.35,
    track_spread: float = 0.25,
    faces: tuple[int, int] = (2, 16),
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The blobs of ``test_clustering.make_tracks`` with this module's defaults:
    ``(embeddings float32 (N, dim), track_index (N,), identity per track (T,))``."""
    return blobs(rng, tracks_per_identity, dim, face_spread, track_spread, faces)[:3]


def assert_pairs_format(pairs: np.ndarray) -> None:
    assert pairs.dtype == np.int64 and pairs.ndim == 2 and pairs.shape[1] == 2
    assert np.all(pairs[:, 0] < pairs[:, 1])
    assert len(np.unique(pairs, axis=0)) == len(pairs)


def test_links_same_identity_only() -> None:
    rng = np.random.default_rng(0)
    emb, index, ident = make_tracks(rng, [5, 5, 5, 5])
    pairs = coarse_matches(emb, index)
    assert_pairs_format(pairs)
    same = ident[pairs[:, 0]] == ident[pairs[:, 1]]
    assert np.all(same)
    # 4 identities x C(5, 2) = 40 positive pairs; matching should find a good share of them.
    assert same.sum() >= 20


def test_mahalanobis_equals_explicit_inverse() -> None:
    rng = np.random.default_rng(1)
    emb, index, _ = make_tracks(rng, [3, 3], dim=16, faces=(2, 9))
    cfg = MatchingConfig(prior_strength=3.0)
    gauss = fit_track_gaussians(emb, index, cfg)
    maha = np.full((len(gauss.means),) * 2, np.inf)  # maha[a, b]: mean b under Gaussian a
    for rows, block in _maha_blocks(gauss, block_faces=5):  # blocks of whole tracks
        maha[rows] = block
    x = emb.astype(np.float64)
    centred = x - gauss.means[index]
    dof = np.bincount(index) - 1
    sigma2 = np.sum(centred**2) / (16 * dof.sum())
    for t in range(len(gauss.means)):
        u = centred[index == t]
        n = len(u)
        cov = (u.T @ u + 3.0 * sigma2 * np.eye(16)) / (n - 1 + 3.0)
        r = gauss.means - gauss.means[t]
        expected = np.einsum("td,de,te->t", r, np.linalg.inv(cov), r)
        np.testing.assert_allclose(maha[t], expected, rtol=1e-5, atol=1e-6)  # float32 product


def test_leave_one_out_threshold_equals_refit() -> None:
    rng = np.random.default_rng(2)
    emb, index, _ = make_tracks(rng, [1, 1], dim=12, faces=(5, 5))
    cfg = MatchingConfig(prior_strength=2.0, lowest_fraction=1.0)
    gauss = fit_track_gaussians(emb, index, cfg)
    x = emb.astype(np.float64)
    sigma2 = np.sum((x - gauss.means[index]) ** 2) / (12 * 8)
    faces = x[index == 0]
    held_out = []
    for i in range(5):
        rest = np.delete(faces, i, axis=0)
        u = rest - rest.mean(0)
        cov = (u.T @ u + 2.0 * sigma2 * np.eye(12)) / (4 - 1 + 2.0)
        r = faces[i] - rest.mean(0)
        held_out.append(r @ np.linalg.solve(cov, r))
    # lowest_fraction=1: the threshold is the mean over all faces.
    assert gauss.thresholds[0] == pytest.approx(np.mean(held_out), rel=1e-8)


def test_two_face_tracks_and_one_face_tracks() -> None:
    rng = np.random.default_rng(3)
    emb, index, ident = make_tracks(rng, [4, 4], faces=(2, 2))
    pairs = coarse_matches(emb, index)
    assert len(pairs) > 0
    assert np.all(ident[pairs[:, 0]] == ident[pairs[:, 1]])
    emb1, index1, ident1 = make_tracks(rng, [4, 4], faces=(1, 1))
    pairs1 = coarse_matches(emb1, index1)
    # One-face tracks carry no spread: with a zero pooled variance they match nothing.
    assert_pairs_format(pairs1)
    assert np.all(ident1[pairs1[:, 0]] == ident1[pairs1[:, 1]])


def test_single_track_and_empty_input() -> None:
    rng = np.random.default_rng(4)
    emb, index, _ = make_tracks(rng, [1])
    assert coarse_matches(emb, index).shape == (0, 2)
    assert coarse_matches(np.zeros((0, 8), np.float32), np.zeros(0, np.int64)).shape == (0, 2)


def test_identical_tracks_zero_variance() -> None:
    rng = np.random.default_rng(5)
    a, b = unit(rng.normal(size=(2, 32)))
    emb = np.concatenate([np.tile(a, (4, 1)), np.tile(a, (3, 1)), np.tile(b, (5, 1))]).astype(np.float32)
    index = np.repeat([0, 1, 2], [4, 3, 5])
    gauss = fit_track_gaussians(emb, index)
    assert np.all(np.isfinite(gauss.thresholds))
    pairs = coarse_matches(emb, index)
    np.testing.assert_array_equal(pairs, [[0, 1]])


def test_one_huge_identity() -> None:
    rng = np.random.default_rng(6)
    emb, index, ident = make_tracks(rng, [200, 1, 1, 1, 1, 1], dim=64, faces=(2, 8))
    pairs = coarse_matches(emb, index, MatchingConfig(block_faces=256))
    assert np.all(ident[pairs[:, 0]] == ident[pairs[:, 1]])
    assert len(pairs) > 200


def test_mutual_is_subset_and_gaps_in_track_ids() -> None:
    rng = np.random.default_rng(7)
    emb, index, _ = make_tracks(rng, [6, 6])
    either = coarse_matches(emb, index)
    both = coarse_matches(emb, index, MatchingConfig(mutual=True))
    assert {tuple(p) for p in both} <= {tuple(p) for p in either}
    # A track id without faces (dropped by a quality filter) is never matched.
    shifted = np.where(index >= 3, index + 1, index)
    pairs = coarse_matches(emb, shifted)
    assert 3 not in pairs
    back = np.where(pairs > 3, pairs - 1, pairs)
    np.testing.assert_array_equal(back, either)


def test_bad_inputs_raise() -> None:
    with pytest.raises(ConfigError, match="lowest_fraction"):
        MatchingConfig(lowest_fraction=0.0)
    with pytest.raises(ConfigError, match="prior_strength"):
        MatchingConfig(prior_strength=-1.0)
    with pytest.raises(InputError, match="track_index"):
        coarse_matches(np.zeros((3, 4), np.float32), np.array([0, 1]))
    with pytest.raises(InputError, match="NaN"):
        coarse_matches(np.full((2, 4), np.nan, np.float32), np.array([0, 1]))


def test_candidate_pairs_get_the_outcome_of_the_full_matching() -> None:
    """Testing only some pairs gives each of them what the all-pairs matching gives it."""
    from vcn.method.grouping import mutual_nearest

    rng = np.random.default_rng(3)
    centres = rng.standard_normal((6, 32))
    emb, index = [], []
    for t in range(40):
        person = t % 6
        n = int(rng.integers(1, 9))
        track = centres[person] + 0.3 * rng.standard_normal(32)
        emb.append(track + 0.4 * rng.standard_normal((n, 32)))
        index += [t] * n
    emb = np.concatenate(emb)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    index = np.array(index)
    every = np.array([(a, b) for a in range(40) for b in range(a + 1, 40)])
    for cfg in (MatchingConfig(), MatchingConfig(mutual=True), MatchingConfig(max_items=4, block_faces=16)):
        full = coarse_matches(emb, index, cfg)
        assert len(full) > 10
        assert coarse_matches(emb, index, cfg, candidates=every).tolist() == full.tolist()
        some = every[rng.random(len(every)) < 0.3]
        expect = [p for p in full.tolist() if p in some.tolist()]
        assert coarse_matches(emb, index, cfg, candidates=some[:, ::-1]).tolist() == expect
    nearest = mutual_nearest(emb, index, np.zeros((0, 2), np.int64))
    assert 0 < len(nearest) <= 20 and len(np.unique(nearest)) == 2 * len(nearest)
    with pytest.raises(InputError):
        coarse_matches(emb, index, candidates=np.array([[0, 40]]))
