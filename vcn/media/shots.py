"""Shot boundaries with PySceneDetect's ContentDetector, fed frame by frame.

A cut at frame ``c`` means a new shot starts at ``c``. Frames come from
:func:`vcn.media.video.iter_frames`, so cuts are in the same 0-based decode index. Chunks detect cuts
over ``[read_start, end)`` independently; :func:`merge_cuts` joins their lists.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from scenedetect.common import FrameTimecode
from scenedetect.detectors import ContentDetector

from vcn.errors import ConfigError, InputError

# ContentDetector only compares frame numbers when min_scene_len is an int, so the rate attached
# to each FrameTimecode never influences a decision; any positive value works.
_NOMINAL_FPS = 25.0


@dataclass(frozen=True)
class ShotConfig:
    """Settings of the content-change shot detector.

    threshold: ContentDetector score (mean absolute change of hue, saturation and luma between
        consecutive frames, 0-255) at or above which a frame starts a new shot (default 27, the
        PySceneDetect default).
    min_scene_len: a cut closer than this many frames to the previous cut (or to the first frame
        seen) is merged away, which suppresses flashes (default 15 frames, PySceneDetect's).
    analysis_width: frames wider than this are downscaled to this width (aspect kept) before
        scoring (default 320). The score is a mean over pixels, so it barely changes with size,
        while HSV conversion of a 720p frame costs about 9x more than at 320 px.
    """

    threshold: float = 27.0
    min_scene_len: int = 15
    analysis_width: int = 320

    def __post_init__(self) -> None:
        if not self.threshold > 0:
            raise ConfigError(f"ShotConfig.threshold={self.threshold}: must be > 0 (default 27)")
        if self.min_scene_len < 0:
            raise ConfigError(f"ShotConfig.min_scene_len={self.min_scene_len}: must be >= 0 (default 15)")
        if self.analysis_width < 16:
            raise ConfigError(f"ShotConfig.analysis_width={self.analysis_width}: must be >= 16 (default 320)")


class ShotDetector:
    """Finds hard cuts in a sequence of frames pushed in increasing ``frame_idx`` order.

    One detector serves one contiguous range of frames (a chunk's ``[read_start, end)``). No cut
    is reported within ``min_scene_len`` frames after the first frame pushed, which is why chunks
    overlap by at least that much.
    """

    def __init__(self, cfg: ShotConfig) -> None:
        self._cfg = cfg
        self._detector = ContentDetector(threshold=cfg.threshold, min_scene_len=cfg.min_scene_len)
        self._analysis_size: tuple[int, int] | None = None  # (width, height), fixed by frame one
        self._first_idx: int | None = None
        self._last_idx: int | None = None
        self._cuts: list[int] = []
        self._flushed = False

    def push(self, frame_idx: int, frame: np.ndarray) -> None:
        """Score one frame: ``uint8 (H, W, 3)`` BGR, ``frame_idx`` above the previous one.

        Gaps between indices are allowed (the frame is compared with the previous one pushed).
        """
        if self._flushed:
            raise InputError("ShotDetector.push after cuts(): use a new ShotDetector per frame range")
        if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
            raise InputError(f"ShotDetector.push: need a uint8 (H, W, 3) BGR frame, got {frame.dtype} "
                             f"{frame.shape}")
        if self._last_idx is not None and frame_idx <= self._last_idx:
            raise InputError(f"ShotDetector.push: frame_idx {frame_idx} after {self._last_idx}; "
                             f"frames must come in increasing order")
        if self._first_idx is None:
            self._first_idx = int(frame_idx)
        self._last_idx = int(frame_idx)
        small = self._analysis_frame(frame)
        found = self._detector.process_frame(FrameTimecode(int(frame_idx), fps=_NOMINAL_FPS), small)
        self._cuts.extend(tc.frame_num for tc in found)

    def cuts(self) -> np.ndarray:
        """``int64 (C,)`` sorted frame indices where a new shot starts.

        The first frame pushed is never a cut. The first call flushes the detector; afterwards
        the detector accepts no more frames, and further calls return the same cuts.
        """
        if not self._flushed and self._last_idx is not None:
            last = FrameTimecode(self._last_idx, fps=_NOMINAL_FPS)
            self._cuts.extend(tc.frame_num for tc in self._detector.post_process(last))
        self._flushed = True
        cuts = np.unique(np.asarray(self._cuts, dtype=np.int64))
        return cuts[cuts > self._first_idx] if self._first_idx is not None else cuts

    def analysis_size(self, width: int, height: int) -> tuple[int, int]:
        """(width, height) a ``width`` x ``height`` frame is scored at. A caller that can
        downscale more cheaply than :meth:`push` (the decoder's scaler,
        :meth:`vcn.media.video.DecodedFrame.small`) pushes frames of this size, which are scored as
        they are."""
        if width > self._cfg.analysis_width:
            scale = self._cfg.analysis_width / width
            return self._cfg.analysis_width, max(1, round(height * scale))
        return width, height

    def _analysis_frame(self, frame: np.ndarray) -> np.ndarray:
        height, width = frame.shape[:2]
        if self._analysis_size is None:
            self._analysis_size = self.analysis_size(width, height)
        if (width, height) == self._analysis_size:
            return frame
        # INTER_AREA averages whole pixel blocks: no aliasing of fine texture into the HSV score.
        return cv2.resize(frame, self._analysis_size, interpolation=cv2.INTER_AREA)


def merge_cuts(cut_lists: list[np.ndarray], tolerance: int = 2) -> np.ndarray:
    """Union of cut lists from overlapping chunks, near-duplicates collapsed.

    Cuts within ``tolerance`` frames of the first cut of a group are one cut; the group keeps
    its most frequent value (the smallest among ties). Returns ``int64 (C,)`` sorted.
    """
    if tolerance < 0:
        raise InputError(f"merge_cuts: tolerance={tolerance} must be >= 0")
    arrays = [np.asarray(c, dtype=np.int64).ravel() for c in cut_lists]
    all_cuts = np.sort(np.concatenate(arrays)) if arrays else np.zeros(0, np.int64)
    merged: list[int] = []
    i = 0
    while i < len(all_cuts):
        j = int(np.searchsorted(all_cuts, all_cuts[i] + tolerance, side="right"))
        values, counts = np.unique(all_cuts[i:j], return_counts=True)
        merged.append(int(values[np.argmax(counts)]))
        i = j
    return np.asarray(merged, dtype=np.int64)


def shots_from_cuts(cuts: np.ndarray, n_frames: int) -> np.ndarray:
    """``int64 (S, 2)`` shots as ``[start, end)`` frame ranges tiling ``[0, n_frames)``.

    Cuts outside ``(0, n_frames)`` are ignored; ``n_frames == 0`` gives ``(0, 2)``.
    """
    if n_frames < 0:
        raise InputError(f"shots_from_cuts: n_frames={n_frames} must be >= 0")
    if n_frames == 0:
        return np.zeros((0, 2), dtype=np.int64)
    cuts = np.unique(np.asarray(cuts, dtype=np.int64))
    cuts = cuts[(cuts > 0) & (cuts < n_frames)]
    bounds = np.concatenate([[0], cuts, [n_frames]]).astype(np.int64)
    return np.stack([bounds[:-1], bounds[1:]], axis=1)


def shot_index(frame_idx: np.ndarray, cuts: np.ndarray) -> np.ndarray:
    """``int64`` shot number of each frame index (same shape): the number of cuts at or before it."""
    cuts = np.unique(np.asarray(cuts, dtype=np.int64))
    return np.searchsorted(cuts, np.asarray(frame_idx, dtype=np.int64), side="right").astype(np.int64)
