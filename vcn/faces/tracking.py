"""Within-shot face tracking.

Faces reach the tracker already detected, filtered and embedded, on a global frame grid
(``frame_idx % stride == 0``), so consecutive updates are ``stride`` frames apart. A track follows
one face inside one shot: a constant-velocity model of the box centre and size predicts where the
face will be, the Hungarian algorithm assigns detections to tracks on a cost that mixes motion and
appearance, and hard gates on both refuse links that no cost should buy (a face jumping across the
frame, or two people swapping places as they cross).

Chunks are tracked independently; ``vcn/faces/stitching.py`` joins their tracks.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np
from scipy.optimize import linear_sum_assignment

from vcn.errors import ConfigError, InputError
from vcn.faces.boxes import box_iou

# Cost given to gated-out pairs; any assignment that costs this much is discarded.
_BLOCKED = 1e6


@dataclass(frozen=True)
class TrackerConfig:
    """Settings of :class:`Tracker` and :func:`track_faces`; sizes are in box sizes, ``sqrt(w * h)``.

    Attributes:
        max_gap_frames: a track whose last face is more than this many frames before the current
            frame ends. One second at 25 fps bridges a face covered by a passer-by; someone who
            leaves and comes back later starts a new track (clustering joins them).
        iou_min: a detection whose IoU with the track's predicted box reaches this passes the
            motion gate...
        max_center_dist: ...and so does one whose centre lies within this many box sizes of the
            predicted centre,
        center_dist_per_frame: plus this many per frame since the track's last face, as the
            prediction grows less certain; so a new track, with no velocity yet, accepts a face
            1.2 box sizes away 2 frames later (someone crossing the foreground at a walk).
        max_scale_ratio: the centre-distance route also needs the two box sizes within this
            ratio, so a small background face is not taken for a nearby foreground one.
        max_cosine_dist: appearance gate: a detection further than this (``1 - cos``) from the
            track's recent mean embedding is never assigned to it; this is what stops identity
            switches when people cross. With ArcFace MobileFaceNet, faces of different people
            were above cosine 0.25 in 0.15% of pairs (18 people, degraded stills) and at most 0.38
            on the 1080p pedestrians clip, while a blurred, hand-covered or profile face fell to
            0.25-0.3 from its own track's mean: 0.7 split two of those people, 0.75 none.
        appearance_weight: weight of the cosine distance in the assignment cost; the motion cost
            (mean of ``1 - IoU`` and of the centre distance over its gate, in [0, 1]) gets the rest.
        appearance_window: number of most recent embeddings averaged into the track's appearance,
            so that slow changes of pose and light are followed.
        measurement_noise: standard deviation of a detector box coordinate, box sizes, in the
            Kalman filter of each track's centre and size: a few pixels of jitter over a 2-3 frame
            step is a large velocity error, which the filter weighs against the motion so far.
        velocity_noise: standard deviation of the change of velocity per frame, box sizes per
            frame; smaller gives smoother velocities that react later to turns.
        initial_speed: prior standard deviation of a new track's centre velocity, box sizes per
            frame; large, so the second face sets the velocity. Size velocities start from a tight
            prior (10 x ``velocity_noise``): faces grow slowly, and a size velocity taken from two
            jittery boxes would throw the size gate off.
        max_extrapolation_frames: the velocity carries a missing face this many frames past its
            last sighting and no further: the last boxes before an occlusion are often cut short,
            and their velocity extrapolated over a second lands far off.
        min_track_faces: :func:`track_faces` gives id -1 to the faces of tracks with fewer faces.
            1 keeps everything. When chunks are stitched keep 1 here and apply the threshold in
            :func:`join_chunk_tracks`, which sees a track's full length across chunk boundaries.
    """

    max_gap_frames: int = 25
    iou_min: float = 0.3
    max_center_dist: float = 1.0
    center_dist_per_frame: float = 0.1
    max_scale_ratio: float = 1.6
    max_cosine_dist: float = 0.75
    appearance_weight: float = 0.5
    appearance_window: int = 10
    measurement_noise: float = 0.05
    velocity_noise: float = 0.00625
    initial_speed: float = 0.5
    max_extrapolation_frames: int = 6
    min_track_faces: int = 1

    def __post_init__(self) -> None:
        checks = {
            "max_gap_frames": self.max_gap_frames >= 1,
            "iou_min": 0.0 < self.iou_min <= 1.0,
            "max_center_dist": self.max_center_dist >= 0.0,
            "center_dist_per_frame": self.center_dist_per_frame >= 0.0,
            "max_scale_ratio": self.max_scale_ratio >= 1.0,
            "max_cosine_dist": 0.0 <= self.max_cosine_dist <= 2.0,
            "appearance_weight": 0.0 <= self.appearance_weight <= 1.0,
            "appearance_window": self.appearance_window >= 1,
            "measurement_noise": self.measurement_noise > 0.0,
            "velocity_noise": self.velocity_noise > 0.0,
            "initial_speed": self.initial_speed > 0.0,
            "max_extrapolation_frames": self.max_extrapolation_frames >= 0,
            "min_track_faces": self.min_track_faces >= 1,
        }
        bad = [name for name, ok in checks.items() if not ok]
        if bad:
            raise ConfigError(
                f"TrackerConfig: {', '.join(f'{n}={getattr(self, n)!r}' for n in bad)} out of range; "
                "see the TrackerConfig docstring for the valid range and the default of each setting"
            )


@dataclass
class _Track:
    """Mutable state of one open track.

    The motion is a constant-velocity Kalman filter on each of the box's ``cx, cy, w, h``,
    independent of one another, so each coordinate has a 2-vector (value, velocity per frame) and
    a 2x2 covariance. Noise levels scale with the box size, as faces near the camera move more
    pixels per frame and have larger detector jitter.
    """

    track_id: int
    mean: np.ndarray  # (4, 2) float64: cx, cy, w, h at last_frame, and their velocity per frame
    cov: np.ndarray  # (4, 2, 2) float64
    last_frame: int
    embeddings: deque[np.ndarray]

    @classmethod
    def start(
        cls, track_id: int, frame_idx: int, box: np.ndarray, embedding: np.ndarray, cfg: TrackerConfig
    ) -> _Track:
        """Open a track on one face: ``box`` ``(4,)`` cx, cy, w, h; ``embedding`` ``(D,)``."""
        size = float(np.sqrt(box[2] * box[3]))
        mean = np.stack([box, np.zeros(4)], axis=1)
        pos_var = (2.0 * cfg.measurement_noise * size) ** 2
        vel_std = np.array([cfg.initial_speed] * 2 + [10.0 * cfg.velocity_noise] * 2) * size
        cov = np.zeros((4, 2, 2))
        cov[:, 0, 0] = pos_var
        cov[:, 1, 1] = vel_std**2
        window = deque([embedding.astype(np.float64)], maxlen=cfg.appearance_window)
        return cls(track_id, mean, cov, frame_idx, window)

    def predict(self, frame_idx: int, cfg: TrackerConfig) -> tuple[np.ndarray, np.ndarray]:
        """Return the ``(4, 2)`` mean and ``(4, 2, 2)`` covariance expected at ``frame_idx``."""
        elapsed = frame_idx - self.last_frame
        step = np.array([[1.0, min(elapsed, cfg.max_extrapolation_frames)], [0.0, 1.0]])
        size = float(np.sqrt(max(self.mean[2, 0] * self.mean[3, 0], 1.0)))
        noise = np.diag([(cfg.measurement_noise * size) ** 2, (cfg.velocity_noise * size) ** 2])
        mean = self.mean @ step.T
        mean[2:, 0] = np.maximum(mean[2:, 0], 1.0)
        cov = step @ self.cov @ step.T + elapsed * noise
        return mean, cov

    def correct(self, frame_idx: int, box: np.ndarray, embedding: np.ndarray, cfg: TrackerConfig) -> None:
        """Add the face ``box`` ``(4,)`` cx, cy, w, h with ``embedding`` ``(D,)`` seen at ``frame_idx``."""
        mean, cov = self.predict(frame_idx, cfg)
        size = float(np.sqrt(box[2] * box[3]))
        innovation_var = cov[:, 0, 0] + (cfg.measurement_noise * size) ** 2
        gain = cov[:, :, 0] / innovation_var[:, None]
        self.mean = mean + gain * (box - mean[:, 0])[:, None]
        self.cov = cov - gain[:, :, None] * cov[:, None, 0, :]
        self.last_frame = frame_idx
        self.embeddings.append(embedding.astype(np.float64))

    def appearance(self) -> np.ndarray:
        """Return the L2-normalised mean of the recent embeddings, ``(D,)`` float64."""
        mean = np.mean(np.stack(self.embeddings), axis=0)
        return mean / max(float(np.linalg.norm(mean)), 1e-12)


def _to_cxcywh(boxes: np.ndarray) -> np.ndarray:
    boxes = boxes.astype(np.float64)
    wh = boxes[:, 2:] - boxes[:, :2]
    return np.concatenate([boxes[:, :2] + wh / 2, wh], axis=1)


def _to_xyxy(cxcywh: np.ndarray) -> np.ndarray:
    half = cxcywh[:, 2:] / 2
    return np.concatenate([cxcywh[:, :2] - half, cxcywh[:, :2] + half], axis=1)


def _check_detections(boxes: np.ndarray, embeddings: np.ndarray, n: int | None = None) -> None:
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise InputError(f"tracking: boxes must be (N, 4) x1, y1, x2, y2, got shape {boxes.shape}")
    if embeddings.ndim != 2 or embeddings.shape[0] != boxes.shape[0]:
        raise InputError(
            f"tracking: embeddings must be (N, D) with one row per box; got {embeddings.shape} "
            f"for {boxes.shape[0]} boxes"
        )
    if n is not None and boxes.shape[0] != n:
        raise InputError(f"tracking: {boxes.shape[0]} boxes for {n} frame indices; pass one per face")


class Tracker:
    """Online multi-face tracker for one shot at a time; call :meth:`reset` at every shot cut.

    Track ids are ``0, 1, 2, ...`` in order of creation, owned by this instance and never reused,
    not even after :meth:`reset`.
    """

    def __init__(self, cfg: TrackerConfig) -> None:
        self._cfg = cfg
        self._tracks: list[_Track] = []
        self._next_id = 0
        self._last_frame: int | None = None

    def reset(self) -> None:
        """End every open track, so the next faces start new ones (a shot cut)."""
        self._tracks = []

    def update(self, frame_idx: int, boxes: np.ndarray, embeddings: np.ndarray) -> np.ndarray:
        """Assign the faces of one frame to tracks.

        Args:
            frame_idx: decode index of the frame; strictly greater than the previous call's.
            boxes: ``(K, 4)`` float32 x1, y1, x2, y2 pixels.
            embeddings: ``(K, D)`` float32 L2-normalised face embeddings.

        Returns:
            ``(K,)`` int64 track id of each face; faces that continue no track start a new one.
        """
        boxes = np.asarray(boxes, dtype=np.float32)
        embeddings = np.asarray(embeddings, dtype=np.float32)
        _check_detections(boxes, embeddings)
        frame_idx = int(frame_idx)
        if self._last_frame is not None and frame_idx <= self._last_frame:
            raise InputError(
                f"Tracker.update: frame {frame_idx} after frame {self._last_frame}; feed frames in "
                "increasing order, one call per frame"
            )
        self._last_frame = frame_idx
        cfg = self._cfg
        self._tracks = [t for t in self._tracks if frame_idx - t.last_frame <= cfg.max_gap_frames]

        ids = np.full(len(boxes), -1, dtype=np.int64)
        det_cxcywh = _to_cxcywh(boxes)
        if self._tracks and len(boxes):
            cost = self._cost(frame_idx, boxes, det_cxcywh, embeddings)
            rows, cols = linear_sum_assignment(cost)
            for r, c in zip(rows, cols, strict=True):
                if cost[r, c] < _BLOCKED:
                    self._tracks[r].correct(frame_idx, det_cxcywh[c], embeddings[c], cfg)
                    ids[c] = self._tracks[r].track_id
        for c in np.flatnonzero(ids < 0):
            track = _Track.start(self._next_id, frame_idx, det_cxcywh[c], embeddings[c], cfg)
            self._next_id += 1
            self._tracks.append(track)
            ids[c] = track.track_id
        return ids

    def _cost(
        self, frame_idx: int, boxes: np.ndarray, det_cxcywh: np.ndarray, embeddings: np.ndarray
    ) -> np.ndarray:
        """Return the ``(T, K)`` assignment cost of open tracks to detections, gates applied."""
        cfg = self._cfg
        pred = np.stack([t.predict(frame_idx, cfg)[0][:, 0] for t in self._tracks])
        iou = box_iou(_to_xyxy(pred), boxes)

        pred_size = np.sqrt(pred[:, 2] * pred[:, 3])
        det_size = np.sqrt(np.maximum(det_cxcywh[:, 2] * det_cxcywh[:, 3], 1e-6))
        offset = np.linalg.norm(pred[:, None, :2] - det_cxcywh[None, :, :2], axis=2)
        center_dist = offset / pred_size[:, None]
        elapsed = np.array([frame_idx - t.last_frame for t in self._tracks], dtype=np.float64)
        allowed = cfg.max_center_dist + cfg.center_dist_per_frame * elapsed
        scale = np.maximum(pred_size[:, None] / det_size[None, :], det_size[None, :] / pred_size[:, None])
        near = (center_dist <= allowed[:, None]) & (scale <= cfg.max_scale_ratio)
        motion_ok = (iou >= cfg.iou_min) | near
        motion_cost = 0.5 * (1.0 - iou) + 0.5 * np.minimum(center_dist / allowed[:, None], 1.0)

        appearance = np.stack([t.appearance() for t in self._tracks])
        cos_dist = 1.0 - appearance @ embeddings.astype(np.float64).T
        appearance_ok = cos_dist <= cfg.max_cosine_dist

        w = cfg.appearance_weight
        cost = (1.0 - w) * motion_cost + w * cos_dist
        return np.where(motion_ok & appearance_ok, cost, _BLOCKED)


def _drop_short_tracks(ids: np.ndarray, min_faces: int) -> np.ndarray:
    """Set ids of tracks with fewer than ``min_faces`` faces to -1 and renumber the rest ``0..``.

    The new numbering follows the old one, so ids stay in order of track creation.
    """
    out = np.full(len(ids), -1, dtype=np.int64)
    valid = ids >= 0
    if not valid.any():
        return out
    _, inverse, counts = np.unique(ids[valid], return_inverse=True, return_counts=True)
    keep = counts >= min_faces
    new_id = np.where(keep, np.cumsum(keep) - 1, -1)
    out[valid] = new_id[inverse]
    return out


def track_faces(
    frame_idx: np.ndarray,
    boxes: np.ndarray,
    embeddings: np.ndarray,
    cuts: np.ndarray,
    cfg: TrackerConfig,
) -> np.ndarray:
    """Track all faces of a chunk: one :class:`Tracker`, reset at every shot cut.

    Args:
        frame_idx: ``(N,)`` int64 frame of each face; rows need not be sorted, and their order does
            not change the result.
        boxes: ``(N, 4)`` float32 x1, y1, x2, y2 pixels.
        embeddings: ``(N, D)`` float32 L2-normalised.
        cuts: ``(C,)`` int64 frames where a new shot starts (sorted or not); a face at frame ``f``
            and one at ``g > f`` are never in one track when a cut ``c`` has ``f < c <= g``.
        cfg: tracker settings; ``cfg.min_track_faces`` is applied to the finished tracks.

    Returns:
        ``(N,)`` int64 track id per input row, ``0..T-1`` in order of the track's first face
        (then left to right), or -1 for faces of tracks shorter than ``cfg.min_track_faces``.
    """
    frame_idx = np.asarray(frame_idx, dtype=np.int64).reshape(-1)
    boxes = np.asarray(boxes, dtype=np.float32)
    embeddings = np.asarray(embeddings, dtype=np.float32)
    _check_detections(boxes, embeddings, len(frame_idx))
    cuts = np.sort(np.asarray(cuts, dtype=np.int64).reshape(-1))

    tracker = Tracker(cfg)
    ids = np.full(len(frame_idx), -1, dtype=np.int64)
    # Within a frame, faces go left to right, so the ids do not depend on the order of the rows.
    order = np.lexsort((boxes[:, 3], boxes[:, 2], boxes[:, 1], boxes[:, 0], frame_idx))
    frames, starts = np.unique(frame_idx[order], return_index=True)
    # Shot number of each frame: faces in different shots must not share a track.
    shot = np.searchsorted(cuts, frames, side="right")
    ends = np.append(starts[1:], len(order))[: len(starts)]  # no faces: no frames, no ends
    for i, (frame, lo, hi) in enumerate(zip(frames, starts, ends, strict=True)):
        if i > 0 and shot[i] != shot[i - 1]:
            tracker.reset()
        rows = order[lo:hi]
        ids[rows] = tracker.update(int(frame), boxes[rows], embeddings[rows])
    return _drop_short_tracks(ids, cfg.min_track_faces)
