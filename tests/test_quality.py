"""Per-detection quality measures and filter, on a real face and synthetic variations of it."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from vcn.errors import ConfigError, InputError
from vcn.faces.detection import DetectionConfig, Detections, FaceDetector, default_model_dir, find_models
from vcn.faces.embedding import align_face, align_faces
from vcn.faces.quality import QualityConfig, keep_mask, measure, passes, sharpness, yaw_proxy

DATA = Path(__file__).parent / "data"
# Eyes, nose tip and mouth corners of a mean face, mm (x right, y down, z towards the camera).
FACE_3D = np.array([[-32, -30, -30], [32, -30, -30], [0, 0, 0], [-24, 30, -25], [24, 30, -25]], float)


def turned(yaw_deg: float, roll_deg: float = 0.0) -> np.ndarray:
    """(5, 2) landmarks of FACE_3D turned by ``yaw_deg`` and rolled by ``roll_deg``, in pixels."""
    t = np.radians(yaw_deg)
    points = FACE_3D @ np.array([[np.cos(t), 0, np.sin(t)], [0, 1, 0], [-np.sin(t), 0, np.cos(t)]]).T
    r = np.radians(roll_deg)
    flat = points[:, :2] @ np.array([[np.cos(r), -np.sin(r)], [np.sin(r), np.cos(r)]]).T
    return (flat * 1.5 + [400, 300]).astype(np.float32)


@pytest.fixture(scope="module")
def face() -> tuple[np.ndarray, Detections]:
    detector = FaceDetector(find_models(default_model_dir()).detector, DetectionConfig())
    image = cv2.imread(str(DATA / "det_jolie.jpg"))
    dets = detector.detect(image)
    assert len(dets) == 1
    return image, dets


def test_tiny_face_dropped_and_low_score_dropped(face) -> None:
    image, dets = face
    crop = align_faces(image, dets.landmarks)
    cfg = QualityConfig()
    assert keep_mask(dets, crop, cfg).tolist() == [True]
    tiny = Detections(np.array([[10, 10, 22, 26]], np.float32), dets.scores, dets.landmarks)  # 12x16 px
    assert keep_mask(tiny, crop, cfg).tolist() == [False]
    small = Detections(np.array([[10, 10, 28, 34]], np.float32), dets.scores, dets.landmarks)  # 24 px high
    assert keep_mask(small, crop, cfg).tolist() == [True]
    weak = Detections(dets.boxes, np.array([0.4], np.float32), dets.landmarks)
    assert keep_mask(weak, crop, cfg).tolist() == [False]


def test_blur_lowers_sharpness_monotonically(face) -> None:
    image, dets = face
    crops = np.stack([
        align_face(cv2.GaussianBlur(image, (0, 0), sigma) if sigma else image, dets.landmarks[0])
        for sigma in (0, 1, 2, 4, 8, 24)
    ])
    s = sharpness(crops)
    assert s.shape == (6,) and s.dtype == np.float32
    assert np.all(np.diff(s) < 0), s
    assert s[0] > 0.3  # a sharp photo face
    six = Detections(*(np.repeat(a, 6, axis=0) for a in (dets.boxes, dets.scores, dets.landmarks)))
    keep = keep_mask(six, crops, QualityConfig())
    assert keep[:4].all() and not keep[-1]  # sigma 24 px on a 270 px face leaves no identity


def test_sharpness_is_robust_to_contrast_but_not_fooled_by_flat_crops(face) -> None:
    image, dets = face
    sharp = align_face(image, dets.landmarks[0])
    blurred = align_face(cv2.GaussianBlur(image, (0, 0), 4), dets.landmarks[0])
    dark = (sharp.astype(np.float32) * 0.3).astype(np.uint8)  # low light: 30% of the signal
    s_sharp, s_blur, s_dark, s_flat = sharpness(np.stack([sharp, blurred, dark, np.full_like(sharp, 7)]))
    assert 0.6 * s_sharp < s_dark < 1.2 * s_sharp
    assert s_dark > 2 * s_blur
    assert s_flat == 0.0
    with pytest.raises(InputError):
        sharpness(np.zeros((1, 64, 64, 3), np.uint8))


def test_yaw_proxy_orders_frontal_to_profile_and_ignores_roll() -> None:
    yaws = np.abs(yaw_proxy(np.stack([turned(a) for a in (0, 15, 30, 45, 60, 75)])))
    assert yaws[0] < 1e-6
    assert np.all(np.diff(yaws) > 0)
    assert yaws[-1] > 1.0
    # in-plane roll does not change it; turning the other way flips the sign
    rolled = yaw_proxy(np.stack([turned(30, roll) for roll in (-25, 0, 25)]))
    np.testing.assert_allclose(rolled, rolled[1], atol=1e-4)
    assert np.sign(yaw_proxy(turned(30)[None])[0]) == -np.sign(yaw_proxy(turned(-30)[None])[0])


def test_yaw_filter_and_real_frontal_face(face) -> None:
    image, dets = face
    assert abs(yaw_proxy(dets.landmarks)[0]) < 0.3  # the test photo is near frontal
    crop = align_face(image, dets.landmarks[0])[None]
    profile = Detections(dets.boxes, dets.scores, turned(80)[None])
    assert keep_mask(profile, crop, QualityConfig()).tolist() == [True]  # pose does not filter by default
    assert keep_mask(profile, crop, QualityConfig(max_yaw=1.5)).tolist() == [False]
    assert keep_mask(dets, crop, QualityConfig(max_yaw=1.5)).tolist() == [True]


def test_measures_are_stored_per_face(face) -> None:
    image, dets = face
    both = Detections(*(np.concatenate([a, a]) for a in (dets.boxes, dets.scores, dets.landmarks)))
    crops = align_faces(image, both.landmarks)
    crops[1] = cv2.GaussianBlur(crops[1], (0, 0), 6)
    m = measure(both, crops)
    for values in (m.face_px, m.score, m.sharpness, m.yaw):
        assert values.shape == (2,) and values.dtype == np.float32
    x1, y1, x2, y2 = dets.boxes[0]
    assert m.face_px[0] == pytest.approx(min(x2 - x1, y2 - y1))
    assert m.sharpness[1] < m.sharpness[0]
    cfg = QualityConfig(min_sharpness=float(m.sharpness.mean()))
    assert passes(m, cfg).tolist() == keep_mask(both, crops, cfg).tolist() == [True, False]
    empty = Detections.empty()
    assert keep_mask(empty, np.zeros((0, 112, 112, 3), np.uint8), QualityConfig()).shape == (0,)
    with pytest.raises(InputError):
        measure(both, crops[:1])
    with pytest.raises(ConfigError):
        QualityConfig(min_score=2.0)
