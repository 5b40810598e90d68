"""vcn.method.track_quality: SER-FIQ scores fall as real faces are degraded, profile/dark tracks score
below sharp frontal ones, and the MAD rule flags low tracks robustly."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from vcn.errors import ConfigError, InputError
from vcn.method.track_quality import (
    SerFiqConfig,
    mad_low_outliers,
    second_look_tracks,
    serfiq_scores,
    track_quality,
)

DATA = Path(__file__).parent / "data"
FRONTAL = [31, 32, 33, 34, 35, 36, 43, 44]  # Miranda's medium-shot track and two photo stills



def degrade(crop: np.ndarray, size: int, sigma: float) -> np.ndarray:
    """A smaller (downscaled to size px, upscaled back) and blurrier copy of an aligned crop."""
    if size < 112:
        crop = cv2.resize(cv2.resize(crop, (size, size), interpolation=cv2.INTER_AREA), (112, 112))
    return cv2.GaussianBlur(crop, (0, 0), sigma) if sigma else crop


def test_scores_fall_as_faces_get_smaller_and_blurrier(backbone, h5_faces) -> None:
    crops, _ = h5_faces
    base = crops[FRONTAL]
    levels = [(112, 0.0), (40, 1.5), (24, 2.5), (16, 3.5)]
    faces = np.concatenate([np.stack([degrade(c, s, b) for c in base]) for s, b in levels])
    q = serfiq_scores(backbone, faces, SerFiqConfig(), seed=0).reshape(len(levels), len(base))
    assert q.dtype == np.float32 and ((q > 0) & (q <= 1)).all()
    means = q.mean(1)
    assert (np.diff(means) < 0).all(), means
    assert (q[-1] < q[0]).all()  # every face: the smallest, blurriest copy scores below the clean one
    assert means[0] - means[-1] > 0.01


def test_profile_and_dark_tracks_score_below_frontal_ones(backbone, h5_faces) -> None:
    crops, tracks = h5_faces
    names = sorted(set(tracks))
    track_index = np.array([names.index(t) for t in tracks], np.int64)
    tq = track_quality(serfiq_scores(backbone, crops, SerFiqConfig(), seed=0), track_index)
    by_name = dict(zip(names, tq, strict=True))
    low = max(by_name["hamilton-1"], by_name["hamilton-2"])  # Lacamoire: dark at the piano; profile
    assert low < min(by_name["hamilton-10"], by_name["still-barack_obama"], by_name["still-biden"])
    flagged = {names[i] for i in np.flatnonzero(mad_low_outliers(tq, k=2.0))}
    assert flagged == {"hamilton-1", "hamilton-2"}


def test_scores_are_seeded_and_independent_of_batching(backbone, h5_faces) -> None:
    crops, _ = h5_faces
    faces = crops[[2, 5, 33, 44]]
    a = serfiq_scores(backbone, faces, SerFiqConfig(batch=4), seed=3)
    b = serfiq_scores(backbone, faces, SerFiqConfig(batch=3), seed=3)
    c = serfiq_scores(backbone, faces[2:], SerFiqConfig(batch=4), seed=3)
    assert np.allclose(a, b, atol=1e-6) and np.allclose(a[2:], c, atol=1e-6)
    assert not np.array_equal(a, serfiq_scores(backbone, faces, SerFiqConfig(batch=4), seed=4))
    unit = serfiq_scores(backbone, faces, SerFiqConfig(mode="unit"), seed=3)
    assert unit.shape == (4,) and ((unit > 0) & (unit <= 1)).all()


def test_track_quality_is_the_median_per_track() -> None:
    scores = np.array([0.9, 0.1, 0.5, 0.7, 0.3], np.float32)
    tracks = np.array([0, 0, 0, 2, 2])
    got = track_quality(scores, tracks)
    assert got.shape == (3,) and got.dtype == np.float32
    assert got[0] == pytest.approx(0.5) and np.isnan(got[1]) and got[2] == pytest.approx(0.5)
    with pytest.raises(InputError):
        track_quality(scores, tracks[:-1])


def test_second_look_tracks_are_those_with_a_face_only_it_found() -> None:
    flags = np.array([True, False, False, False, True, False, False])
    tracks = np.array([0, 0, 0, 1, 1, 2, 3])
    assert second_look_tracks(flags, tracks, 5).tolist() == [True, True, False, False, False]
    with pytest.raises(InputError):
        second_look_tracks(flags, tracks[:-1], 5)


def test_mad_low_outliers() -> None:
    v = np.array([10.0, 10.5, 9.5, 10.2, 9.8, 6.0, 14.0])
    # median 10, MAD 0.3 -> threshold 10 - 3 * 1.4826 * 0.3 = 8.67; only the low side is flagged
    assert mad_low_outliers(v).tolist() == [False, False, False, False, False, True, False]
    assert not mad_low_outliers(v, k=20.0).any()
    # MAD = 0 (most values equal): a clearly lower value is still flagged, equal ones are not
    same = np.array([0.6, 0.6, 0.6, 0.6, 0.6, 0.2])
    assert mad_low_outliers(same).tolist() == [False] * 5 + [True]
    assert not mad_low_outliers(np.full(5, 0.4)).any()
    assert mad_low_outliers(np.array([0.5, np.nan, 0.5, 0.5, 0.1])).tolist() == [
        False,
        False,
        False,
        False,
        True,
    ]
    assert mad_low_outliers(np.zeros(0)).shape == (0,)
    with pytest.raises(ConfigError):
        mad_low_outliers(v, k=0)


@pytest.mark.parametrize("openvino", [True, False])
def test_engine_features_give_the_torch_scores(backbone, h5_faces, openvino) -> None:
    """The recognizer's engine returns the dropout point's activations with the embedding (OpenVINO,
    or onnxruntime with the tensor added as a graph output); SER-FIQ from them equals the torch
    trunk's scores, and the embedding is the plain one."""
    from vcn.faces.embedding import EmbeddingConfig, FaceEmbedder
    from vcn.faces.sessions import open_session
    from vcn.method.track_quality import dropout_point, serfiq_from_features

    crops, _ = h5_faces
    cfg = SerFiqConfig()
    point = dropout_point(backbone, cfg.mode)
    embedder = FaceEmbedder(backbone.source, EmbeddingConfig(batch_size=8), 1, features=point)
    if not openvino:
        embedder._session = open_session(backbone.source, 1, "face recognizer", extra_outputs=(point,))
    emb, feats = embedder.embed_with_features(crops)
    assert feats.shape[0] == len(crops) and feats.dtype == np.float32
    plain = FaceEmbedder(backbone.source, EmbeddingConfig(batch_size=8), 1).embed(crops)
    assert np.abs(emb - plain).max() < 1e-5
    torch_scores = serfiq_scores(backbone, crops, cfg, seed=0)
    assert np.abs(serfiq_from_features(backbone, feats, cfg, seed=0) - torch_scores).max() < 1e-5
    assert serfiq_from_features(backbone, feats[:0], cfg, seed=0).shape == (0,)
