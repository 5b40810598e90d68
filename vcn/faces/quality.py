"""Per-detection quality filter: size, detector score, blur and extreme pose.

Each measure is a public function so callers can store it per face; ``keep_mask`` applies the
thresholds of ``QualityConfig``. The defaults are deliberately permissive: they were set on the
labelled dev clips so that labelled faces survive (including the defocused Hamilton audience and
the profile shots, see docs/detection.md), and only crops that carry no identity (tiny, flat,
heavily blurred) are dropped. Track-level quality (SER-FIQ)
lives in ``track_quality.py``.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from vcn.errors import ConfigError, InputError
from vcn.faces.detection import Detections

# Sharpness is measured on the aligned crop halved to 56x56: a 24 px face is then roughly at its
# native resolution (the 112 px crop of a small face is mostly interpolation), and INTER_AREA
# averages away sensor noise that the Laplacian would otherwise count as detail.
_SHARPNESS_SIZE = 56
# Eyes-to-chin window of the 56 px crop: excludes background and the black fill outside frames.
_FACE_ROWS, _FACE_COLS = slice(12, 52), slice(12, 44)
# Contrast regulariser (grey levels squared): a near-black crop must not look sharp because its
# noise is divided by a near-zero variance.
_CONTRAST_FLOOR = 16.0


@dataclass(frozen=True)
class QualityConfig:
    """Thresholds of the per-detection filter.

    Attributes:
        min_face_px: minimum short side of the box, pixels. SCRFD boxes are ~0.75 as wide as
            high, so 16 lets faces about 22 px high and larger through.
        min_score: minimum detector score (the detector applies its own threshold too; this one
            lets a run keep low-score faces for the record and filter later).
        min_sharpness: minimum ``sharpness``. Labelled dev faces (Hamilton, pedestrians, the HARD
            episode) go down to 0.011, the defocused Hamilton audience to 0.03. The 270 px face of
            tests/data/det_jolie.jpg scores 0.92 sharp, 0.031 blurred with a Gaussian of sigma 8 px
            (its embedding keeps cosine 0.53 to the sharp one), 0.011 at sigma 16 (cosine 0.10)
            and 0.008 at sigma 24 (cosine 0.005); a flat crop scores 0.
        max_yaw: maximum ``|yaw_proxy|``. The default, 10, is the proxy's clip value: pose does not
            filter. Measured on the dev clips, labelled profiles (Lacamoire, |yaw| 2.4-10;
            Michelle Obama, 1.5-2.4) still embed much closer to their own identity than to anyone
            else (cosine margin 0.20-0.73, median 0.64 against 0.65 for frontal faces), and
            dropping them loses whole tracks.
            Lower it (e.g. 1.5, about 75 degrees on a mean-face model) to drop near-profiles.
    """

    min_face_px: float = 16.0
    min_score: float = 0.5
    min_sharpness: float = 0.01
    max_yaw: float = 10.0

    def __post_init__(self) -> None:
        bad_range = self.min_face_px < 0 or self.min_sharpness < 0 or self.max_yaw <= 0
        if bad_range or not 0.0 <= self.min_score <= 1.0:
            raise ConfigError(
                f"QualityConfig {self}: min_face_px and min_sharpness must be >= 0, min_score in [0, 1], "
                "max_yaw > 0"
            )


@dataclass
class QualityMeasures:
    """Per-face measures, one entry per detection (all float32 (K,)).

    Attributes:
        face_px: short side of the box, pixels.
        score: detector score.
        sharpness: see ``sharpness``.
        yaw: signed ``yaw_proxy``.
    """

    face_px: np.ndarray
    score: np.ndarray
    sharpness: np.ndarray
    yaw: np.ndarray


def face_size(boxes: np.ndarray) -> np.ndarray:
    """Short side of each box: float (K, 4) x1, y1, x2, y2 pixels -> float32 (K,)."""
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    return np.minimum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])


def sharpness(crops: np.ndarray) -> np.ndarray:
    """Blur measure of aligned face crops, higher is sharper.

    The variance of the Laplacian over the eyes-to-chin window of the crop halved to 56x56,
    divided by the grey-level variance of that window (plus a small floor): dividing by contrast
    keeps a sharp face in low light from looking blurred, and the floor keeps a black crop's noise
    from looking sharp.

    Args:
        crops: uint8 (K, 112, 112, 3) BGR aligned crops.

    Returns:
        float32 (K,), 0 for a flat crop; sharp faces typically 0.1-1.5.
    """
    if crops.ndim != 4 or crops.shape[1:] != (112, 112, 3) or crops.dtype != np.uint8:
        raise InputError(
            "sharpness needs uint8 (K, 112, 112, 3) aligned crops (vcn.faces.embedding.align_faces), "
            f"got {crops.dtype} {crops.shape}"
        )
    out = np.zeros(len(crops), np.float32)
    for i, crop in enumerate(crops):
        grey = cv2.cvtColor(crop, cv2.COLOR_BGR2GRAY)
        small = cv2.resize(grey, (_SHARPNESS_SIZE, _SHARPNESS_SIZE), interpolation=cv2.INTER_AREA)
        window = small[_FACE_ROWS, _FACE_COLS].astype(np.float32)
        lap = cv2.Laplacian(window, cv2.CV_32F)[1:-1, 1:-1]  # the border row reflects, not detail
        out[i] = lap.var() / (window.var() + _CONTRAST_FLOOR)
    return out


def yaw_proxy(landmarks: np.ndarray) -> np.ndarray:
    """Signed head-turn proxy from the five landmarks.

    The nose's distance from the face midline (the line through the eye midpoint and the mouth
    midpoint) divided by the distance between the eyes. It ignores in-plane roll; on a mean-face
    3-D model it is about ``0.43 * tan(yaw)``: 0 frontal, 0.25 at 30 degrees, 0.43 at 45, 0.74 at
    60, 1.6 at 75, and it grows without bound towards a full profile (where SCRFD's landmarks are
    themselves guesses). Positive when the nose points to the image's right.

    Args:
        landmarks: float (K, 5, 2) left eye, right eye, nose, left and right mouth corner, pixels.

    Returns:
        float32 (K,), clipped to [-10, 10].
    """
    pts = np.asarray(landmarks, dtype=np.float64).reshape(-1, 5, 2)
    eye_mid = (pts[:, 0] + pts[:, 1]) / 2
    mouth_mid = (pts[:, 3] + pts[:, 4]) / 2
    down = mouth_mid - eye_mid
    down /= np.maximum(np.linalg.norm(down, axis=1, keepdims=True), 1e-6)
    rel = pts[:, 2] - eye_mid
    # 2-D cross product: signed distance of the nose from the midline, positive to the right of
    # the downward midline in image coordinates (y down), i.e. towards image right when upright
    offset = down[:, 1] * rel[:, 0] - down[:, 0] * rel[:, 1]
    eye_dist = np.linalg.norm(pts[:, 1] - pts[:, 0], axis=1)
    return np.clip(offset / np.maximum(eye_dist, 1e-6), -10.0, 10.0).astype(np.float32)


def measure(dets: Detections, crops: np.ndarray) -> QualityMeasures:
    """All per-face measures of one frame's detections and their aligned crops
    (uint8 (K, 112, 112, 3), in the order of ``dets``)."""
    if len(crops) != len(dets):
        raise InputError(f"{len(dets)} detections but {len(crops)} aligned crops: align every detection")
    return QualityMeasures(
        face_px=face_size(dets.boxes),
        score=np.asarray(dets.scores, np.float32),
        sharpness=sharpness(crops),
        yaw=yaw_proxy(dets.landmarks),
    )


def keep_mask(dets: Detections, crops: np.ndarray, cfg: QualityConfig) -> np.ndarray:
    """Which detections pass the filter.

    Args:
        dets: one frame's detections (K faces).
        crops: uint8 (K, 112, 112, 3) BGR aligned crops of those detections.
        cfg: thresholds.

    Returns:
        bool (K,); True keeps the face.
    """
    return passes(measure(dets, crops), cfg)


def passes(m: QualityMeasures, cfg: QualityConfig) -> np.ndarray:
    """bool (K,) mask of faces whose stored measures pass ``cfg`` (no pixels needed)."""
    return (
        (m.face_px >= cfg.min_face_px)
        & (m.score >= cfg.min_score)
        & (m.sharpness >= cfg.min_sharpness)
        & (np.abs(m.yaw) <= cfg.max_yaw)
    )
