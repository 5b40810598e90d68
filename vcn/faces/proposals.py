"""YuNet face proposals: a cheap whole-frame pass that says where faces may be.

YuNet (2023mar, MIT licence, from OpenCV Zoo; ``vcn/faces/models/face_detection_yunet_2023mar.onnx``,
232 KB) finds more of the small, blurred and dark faces of degraded footage than SCRFD-500M on
the whole frame, for half its cost at the same input size. Its landmarks are coarser, so vcn uses
its boxes only as proposals: :class:`vcn.faces.detection.FaceDetector` confirms each with SCRFD on
a zoomed crop, which gives the box, landmarks and score the pipeline keeps (docs/detection.md).
"""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np

from vcn.errors import InputError, ModelNotFoundError
from vcn.faces.sessions import open_session

YUNET_PATH = str(Path(__file__).with_name("models") / "face_detection_yunet_2023mar.onnx")
_STRIDES = (8, 16, 32)
PAD_MULTIPLE = 32


def input_scale(width: int, height: int, long_side: int, max_upscale: float) -> float:
    """The factor that brings a width x height region's long side to ``long_side``, at most
    ``max_upscale``."""
    return min(long_side / max(width, height), max_upscale)


def fit_input(width: int, height: int, long_side: int, max_upscale: float) -> tuple[int, int, int, int]:
    """(in_w, in_h, pad_w, pad_h): a width x height region resized by :func:`input_scale`, and the
    network input that holds it, padded up to a multiple of 32. Both whole-frame detectors, YuNet
    and SCRFD, size their input this way; ``int()`` like insightface, as a one-pixel different
    resize moves boxes."""
    scale = input_scale(width, height, long_side, max_upscale)
    in_w, in_h = max(1, int(width * scale + 1e-6)), max(1, int(height * scale + 1e-6))
    pad_w, pad_h = (math.ceil(side / PAD_MULTIPLE) * PAD_MULTIPLE for side in (in_w, in_h))
    return in_w, in_h, pad_w, pad_h


class FaceProposer:
    """YuNet on onnxruntime at any input size. One instance per worker.

    Args:
        model_path: the YuNet ONNX graph (outputs ``cls_8``, ``obj_8``, ``bbox_8`` ... per stride).
        input_size: long side, in pixels, the frame is resized to (padded to a multiple of 32).
        max_upscale: a frame is never enlarged by more than this factor.
        threads: intra-op threads of the session.
    """

    def __init__(self, model_path: str, input_size: int, max_upscale: float, threads: int = 1) -> None:
        self._session = open_session(model_path, threads, "face proposal", free_axes=True)
        names = {o.name for o in self._session.get_outputs()}
        wanted = [f"{kind}_{s}" for s in _STRIDES for kind in ("cls", "obj", "bbox")]
        if not set(wanted) <= names:
            raise ModelNotFoundError(
                f"face proposal model {model_path} lacks YuNet's outputs {wanted}: use vcn's "
                "face_detection_yunet_2023mar.onnx"
            )
        self._outputs = wanted
        self._input = self._session.get_inputs()[0].name
        self.input_size = input_size
        self.max_upscale = max_upscale

    def propose(self, frame: np.ndarray, floor: float) -> tuple[np.ndarray, np.ndarray]:
        """Face proposals in one frame, before non-maximum suppression.

        Args:
            frame: uint8 (H, W, 3) BGR.
            floor: lowest score kept.

        Returns:
            boxes float32 (K, 4) x1, y1, x2, y2 in frame pixels (unclipped), scores float32 (K,)
            in [0, 1] (YuNet's ``sqrt(class * objectness)``).
        """
        if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
            raise InputError(
                f"FaceProposer.propose needs a uint8 (H, W, 3) BGR frame, got {frame.dtype} {frame.shape}"
            )
        height, width = frame.shape[:2]
        in_w, in_h, pad_w, pad_h = fit_input(width, height, self.input_size, self.max_upscale)
        scale = input_scale(width, height, self.input_size, self.max_upscale)
        blob = np.zeros((1, 3, pad_h, pad_w), np.float32)
        resized = frame if (in_w, in_h) == (width, height) else cv2.resize(frame, (in_w, in_h))
        blob[0, :, :in_h, :in_w] = resized.transpose(2, 0, 1)
        outs = dict(zip(self._outputs, self._session.run(self._outputs, {self._input: blob}), strict=True))
        boxes, scores = [], []
        for stride in _STRIDES:
            cols = pad_w // stride
            cls, obj = outs[f"cls_{stride}"][0, :, 0], outs[f"obj_{stride}"][0, :, 0]
            score = np.sqrt(np.clip(cls, 0, 1) * np.clip(obj, 0, 1))
            hit = np.nonzero(score >= floor)[0]
            if hit.size == 0:
                continue
            delta = outs[f"bbox_{stride}"][0, hit]
            cx = (hit % cols + delta[:, 0]) * stride
            cy = (hit // cols + delta[:, 1]) * stride
            half_w, half_h = np.exp(delta[:, 2]) * stride / 2, np.exp(delta[:, 3]) * stride / 2
            boxes.append(np.stack([cx - half_w, cy - half_h, cx + half_w, cy + half_h], axis=1) / scale)
            scores.append(score[hit])
        if not scores:
            return np.zeros((0, 4), np.float32), np.zeros((0,), np.float32)
        return np.concatenate(boxes).astype(np.float32), np.concatenate(scores).astype(np.float32)
