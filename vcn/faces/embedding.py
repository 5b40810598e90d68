"""Five-point face alignment and ArcFace embeddings on onnxruntime.

Alignment is insightface's ``norm_crop``: the least-squares similarity transform (Umeyama) that
maps the five detected landmarks onto the ArcFace template, then one bilinear warp to 112x112.
It is reimplemented in numpy so that vcn does not depend on scikit-image; a test checks it
against insightface pixel for pixel. The embedder reproduces insightface's ``ArcFaceONNX``
preprocessing exactly (BGR to RGB, ``(x - 127.5) / 127.5``, NCHW) and runs whole batches.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import onnx

from vcn.errors import ConfigError, InputError, ModelNotFoundError
from vcn.faces.sessions import open_session

CROP_SIZE = 112
# insightface's arcface_dst: where the eyes, nose tip and mouth corners land in a 112x112 crop.
ARCFACE_TEMPLATE = np.array(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]],
    dtype=np.float64,
)


def similarity_transform(landmarks: np.ndarray) -> np.ndarray | None:
    """The 2x3 float64 similarity matrix taking ``landmarks`` (5, 2) onto ``ARCFACE_TEMPLATE``.

    Umeyama's least-squares estimate, as scikit-image's ``SimilarityTransform.estimate`` (which
    insightface uses). Returns None for degenerate landmarks (all points coincide).
    """
    src = np.asarray(landmarks, dtype=np.float64)
    dst = ARCFACE_TEMPLATE
    src_mean, dst_mean = src.mean(axis=0), dst.mean(axis=0)
    src_c, dst_c = src - src_mean, dst - dst_mean
    src_var = (src_c**2).sum() / len(src)
    if not np.isfinite(src_var) or src_var < 1e-9:
        return None
    cov = dst_c.T @ src_c / len(src)
    sign = np.ones(2)
    if np.linalg.det(cov) < 0:
        sign[1] = -1
    u, s, vt = np.linalg.svd(cov)
    if np.linalg.matrix_rank(cov) == 1:
        # collinear points: keep a proper rotation whatever the SVD's sign choice
        if np.linalg.det(u) * np.linalg.det(vt) > 0:
            rot = u @ vt
        else:
            last = sign[1]
            sign[1] = -1
            rot = u @ np.diag(sign) @ vt
            sign[1] = last
    else:
        rot = u @ np.diag(sign) @ vt
    scale = (s @ sign) / src_var
    matrix = np.empty((2, 3))
    matrix[:, :2] = scale * rot
    matrix[:, 2] = dst_mean - scale * rot @ src_mean
    return matrix


def align_face(frame: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
    """One aligned face crop.

    Args:
        frame: uint8 (H, W, 3) BGR.
        landmarks: float (5, 2) left eye, right eye, nose, left and right mouth corner, pixels.

    Returns:
        uint8 (112, 112, 3) BGR crop; pixels outside the frame are black. Degenerate landmarks
        give an all-black crop (which the quality filter's sharpness measure rejects).
    """
    matrix = similarity_transform(landmarks)
    if matrix is None:
        return np.zeros((CROP_SIZE, CROP_SIZE, 3), np.uint8)
    return cv2.warpAffine(frame, matrix, (CROP_SIZE, CROP_SIZE), borderValue=0.0)


def align_faces(frame: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
    """Aligned crops of all faces of one frame.

    Args:
        frame: uint8 (H, W, 3) BGR.
        landmarks: float (K, 5, 2) pixels of ``frame``.

    Returns:
        uint8 (K, 112, 112, 3) BGR crops, in the order of ``landmarks``.
    """
    if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
        raise InputError(f"align_faces needs a uint8 (H, W, 3) BGR frame, got {frame.dtype} {frame.shape}")
    landmarks = np.asarray(landmarks)
    if landmarks.ndim != 3 or landmarks.shape[1:] != (5, 2):
        raise InputError(f"align_faces needs landmarks of shape (K, 5, 2), got {landmarks.shape}")
    crops = np.empty((len(landmarks), CROP_SIZE, CROP_SIZE, 3), np.uint8)
    for i, points in enumerate(landmarks):
        crops[i] = align_face(frame, points)
    return crops


@dataclass(frozen=True)
class EmbeddingConfig:
    """How the recognizer is run.

    Attributes:
        batch_size: crops per onnxruntime call. On one CPU thread the cost per face hardly
            depends on it (w600k_mbf: 13-15 ms/face at batch 1, 15-16.5 at 64, docs/detection.md);
            on a GPU large batches are what pays. 16 is the CPU sweet spot measured here;
            raise it on a GPU.
        precision: "f32", or "bf16" on OpenVINO where the CPU has bfloat16 units (float32
            elsewhere): the ingest's embeddings and the view bank's augmented views, whose
            spread is 15 times the rounding or more.
    """

    batch_size: int = 16
    precision: str = "f32"

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ConfigError(f"EmbeddingConfig.batch_size={self.batch_size}: use 1 or more")
        if self.precision not in ("f32", "bf16"):
            raise ConfigError(f"EmbeddingConfig.precision={self.precision!r} must be 'f32' or 'bf16'")


def _input_normalisation(model_path: str) -> tuple[float, float]:
    """(mean, std) the graph expects, decided as insightface's ArcFaceONNX does: graphs converted
    from MXNet subtract and scale inside the network (a Sub and a Mul among the first nodes)."""
    graph = onnx.load(model_path, load_external_data=False).graph
    names = [node.name for node in graph.node[:8]]
    has_sub = any(n.startswith(("Sub", "_minus")) for n in names)
    has_mul = any(n.startswith(("Mul", "_mul")) for n in names)
    return (0.0, 1.0) if has_sub and has_mul else (127.5, 127.5)


class FaceEmbedder:
    """ArcFace recognizer (e.g. w600k_mbf.onnx) on OpenVINO or onnxruntime
    (:func:`vcn.faces.sessions.open_session`). One instance per worker.

    ``features`` names an inner tensor of the graph that :meth:`embed_with_features` also
    returns from the same pass (SER-FIQ's dropout point, so quality costs no second trunk pass).
    """

    def __init__(
        self, model_path: str, cfg: EmbeddingConfig, threads: int = 1, features: str | None = None
    ) -> None:
        self.cfg = cfg
        self._features = features
        self._session = open_session(model_path, threads, "face recognizer", openvino=True,
                                     precision=cfg.precision, extra_outputs=(features,) if features else ())
        inp = self._session.get_inputs()[0]
        if list(inp.shape[1:]) != [3, CROP_SIZE, CROP_SIZE]:
            raise ModelNotFoundError(
                f"face recognizer {model_path} takes input {inp.shape}; vcn needs an ArcFace graph with "
                "a (N, 3, 112, 112) input, e.g. w600k_mbf.onnx or w600k_r50.onnx"
            )
        self._input_name = inp.name
        out_shape = self._session.get_outputs()[0].shape
        self.dim = out_shape[-1] if isinstance(out_shape[-1], int) else 512
        self._mean, self._std = _input_normalisation(model_path)

    @property
    def precision(self) -> str:
        """The precision the engine runs in: ``cfg.precision`` where the CPU has it, else "f32"
        (onnxruntime, or a CPU without bfloat16 units)."""
        return getattr(self._session, "precision", "f32")

    def embed(self, crops: np.ndarray) -> np.ndarray:
        """Embeddings of aligned face crops.

        Args:
            crops: uint8 (N, 112, 112, 3) BGR aligned crops (see ``align_faces``); N may be 0.

        Returns:
            float32 (N, 512) L2-normalised embeddings.
        """
        return self._run(crops)[0]

    def embed_with_features(self, crops: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """uint8 (N, 112, 112, 3) BGR aligned crops -> (float32 (N, 512) L2-normalised
        embeddings, float32 (N, ...) the ``features`` tensor of each crop)."""
        if self._features is None:
            raise ConfigError("FaceEmbedder.embed_with_features needs a features= tensor name")
        return self._run(crops)

    def _run(self, crops: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        if crops.ndim != 4 or crops.shape[1:] != (CROP_SIZE, CROP_SIZE, 3) or crops.dtype != np.uint8:
            raise InputError(
                "FaceEmbedder.embed needs uint8 (N, 112, 112, 3) aligned crops "
                "(vcn.faces.embedding.align_faces), "
                f"got {crops.dtype} {crops.shape}"
            )
        out = np.zeros((len(crops), self.dim), np.float32)
        feats = []
        for start in range(0, len(crops), self.cfg.batch_size):
            batch = crops[start : start + self.cfg.batch_size]
            blob = cv2.dnn.blobFromImages(
                list(batch), 1.0 / self._std, (CROP_SIZE, CROP_SIZE), (self._mean,) * 3, swapRB=True
            )
            result = self._session.run(None, {self._input_name: blob})
            out[start : start + len(batch)] = result[0]
            if self._features is not None:
                feats.append(np.asarray(result[-1], np.float32))
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        features = None if self._features is None else (
            np.concatenate(feats) if feats else np.zeros((0,), np.float32))
        return out / np.maximum(norms, 1e-12), features
