"""SER-FIQ-style face quality, per-track medians and robust low outliers.

SER-FIQ (Terhorst et al., CVPR 2020) scores a face by how stable its embedding is under
dropout: a face the network sees clearly lands on nearly the same embedding whatever units are
dropped, a blurred, tiny or turned face does not. The dropout sits where ArcFace training put
it, just before the final fully-connected layer (IResNet's ``dropout`` before ``fc``). The trunk
runs once per face, then ``passes`` masked copies go through the last layers, and
quality = 2 * sigmoid(-mean pairwise Euclidean distance of the L2-normalised stochastic
embeddings), in (0, 1], higher = more robust.

By default whole channels of the last feature map are dropped (``mode="channel"``, Dropout2d)
rather than single units (SER-FIQ's ``"unit"``): on w600k_mbf, which was trained without
dropout, it follows blur and downscaling more closely. The same masks are used for every face, so a
face's score does not depend on the other faces in its batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from vcn.errors import ConfigError, InputError
from vcn.faces.backbone import WEIGHT_LAYER_OPS, OnnxBackbone, preprocess


@dataclass(frozen=True)
class SerFiqConfig:
    """SER-FIQ settings.

    passes: stochastic forward passes per face (SER-FIQ uses 100; 24 reproduces the ranking of
        100 to a Spearman correlation of about 0.95 at a quarter of the cost).
    dropout: probability of dropping each unit or channel (0.5, as in SER-FIQ).
    mode: "channel" drops whole channels of the feature map before the last layer (Dropout2d),
        "unit" drops single inputs of the last layer (SER-FIQ as published).
    batch: faces per trunk forward pass.
    device: "auto" (CUDA when available), "cpu" or "cuda".
    """

    passes: int = 24
    dropout: float = 0.5
    mode: str = "channel"
    batch: int = 64
    device: str = "auto"

    def __post_init__(self) -> None:
        if self.passes < 2:
            raise ConfigError(f"SerFiqConfig.passes={self.passes} must be >= 2 (distances need two passes)")
        if not 0.0 < self.dropout < 1.0:
            raise ConfigError(f"SerFiqConfig.dropout={self.dropout} must lie in (0, 1)")
        if self.mode not in ("channel", "unit"):
            raise ConfigError(f"SerFiqConfig.mode={self.mode!r} must be 'channel' or 'unit'")
        if self.batch < 1:
            raise ConfigError(f"SerFiqConfig.batch={self.batch} must be >= 1")
        if self.device not in ("auto", "cpu", "cuda"):
            raise ConfigError(f"SerFiqConfig.device={self.device!r} must be 'auto', 'cpu' or 'cuda'")


def dropout_point(backbone: OnnxBackbone, mode: str = "channel") -> str:
    """The tensor where SER-FIQ applies dropout: the input of the last Conv/Gemm/MatMul layer,
    or for mode="channel" the feature map that a Flatten/Reshape turns into that input.

    It must be a single-tensor cut of the graph (true of the ArcFace recognizers).
    """
    last = next(n for n in reversed(backbone.nodes) if n.op in WEIGHT_LAYER_OPS)
    point = last.inputs[0]
    if mode == "channel":
        producer = next((n for n in backbone.nodes if point in n.outputs), None)
        if producer is not None and producer.op in ("Flatten", "Reshape"):
            point = producer.inputs[0]
    if point not in backbone.cut_points():
        raise ConfigError(
            f"{backbone.source}: the SER-FIQ dropout point {point!r} is not a single-tensor cut "
            "of the graph; use another recognizer"
        )
    return point


def _pairwise_mean_distance(emb: torch.Tensor) -> torch.Tensor:
    """emb (m, B, D) L2-normalised -> (B,) mean Euclidean distance over the m(m-1)/2 pairs."""
    m = emb.shape[0]
    gram = torch.einsum("ibd,jbd->bij", emb, emb)
    dist = torch.sqrt(torch.clamp(2.0 - 2.0 * gram, min=0.0))
    iu = torch.triu_indices(m, m, offset=1)
    return dist[:, iu[0], iu[1]].mean(-1)


def _device(cfg: SerFiqConfig) -> torch.device:
    use_cuda = cfg.device == "cuda" or (cfg.device == "auto" and torch.cuda.is_available())
    if use_cuda and not torch.cuda.is_available():
        raise ConfigError("SerFiqConfig.device='cuda' but torch sees no CUDA device; use 'auto' or 'cpu'")
    return torch.device("cuda" if use_cuda else "cpu")


def serfiq_from_features(
    backbone: OnnxBackbone, features: np.ndarray, cfg: SerFiqConfig, seed: int
) -> np.ndarray:
    """SER-FIQ quality from each face's activations at :func:`dropout_point`: float32 (N,) in
    (0, 1].

    features: float32 (N, ...) the recognizer's activations at the dropout point (the trunk's
    output, from any engine). ``passes`` masked copies go through the last layers of
    ``backbone`` (not modified). The masks come from a generator seeded with ``seed`` and are
    the same for every face, so a face's score does not depend on its batch.
    """
    features = np.asarray(features, np.float32)
    if len(features) == 0:
        return np.zeros(0, np.float32)
    device = _device(cfg)
    point = dropout_point(backbone, cfg.mode)
    keep = 1.0 - cfg.dropout
    shape = features.shape[1:] if cfg.mode == "unit" else (features.shape[1],) + (1,) * (features.ndim - 2)
    gen = torch.Generator().manual_seed(seed)
    masks = ((torch.rand((cfg.passes, 1, *shape), generator=gen) < keep).float() / keep).to(device)
    was_training = backbone.training
    backbone.eval()
    scores = []
    try:
        with torch.no_grad():
            for i in range(0, len(features), cfg.batch):
                h = torch.from_numpy(features[i : i + cfg.batch]).to(device)
                hs = (h.unsqueeze(0) * masks).reshape(-1, *h.shape[1:])
                emb = F.normalize(backbone.run(hs, start=point).float(), dim=-1)
                emb = emb.reshape(cfg.passes, h.shape[0], -1)
                scores.append((2.0 * torch.sigmoid(-_pairwise_mean_distance(emb))).cpu().numpy())
    finally:
        backbone.train(was_training)
    return np.concatenate(scores).astype(np.float32)


def serfiq_features(backbone: OnnxBackbone, crops: np.ndarray, cfg: SerFiqConfig) -> np.ndarray:
    """float32 (N, ...) the torch recognizer's activations at :func:`dropout_point` for uint8
    (N, 112, 112, 3) BGR aligned crops (for engines that cannot return them with the embedding)."""
    crops = np.asarray(crops)
    if crops.ndim != 4 or crops.shape[1:] != (112, 112, 3) or crops.dtype != np.uint8:
        raise InputError(
            f"serfiq_features expects uint8 (N, 112, 112, 3) aligned crops, got {crops.dtype} {crops.shape}"
        )
    device = _device(cfg)
    point = dropout_point(backbone, cfg.mode)
    was_training = backbone.training
    backbone.eval()
    out = []
    try:
        with torch.no_grad():
            for i in range(0, len(crops), cfg.batch):
                x = preprocess(crops[i : i + cfg.batch], backbone.input_mean, backbone.input_std).to(device)
                out.append(backbone.run(x, stop=point).float().cpu().numpy())
    finally:
        backbone.train(was_training)
    return np.concatenate(out) if out else np.zeros((0,), np.float32)


def serfiq_scores(backbone: OnnxBackbone, crops: np.ndarray, cfg: SerFiqConfig, seed: int) -> np.ndarray:
    """SER-FIQ quality of each aligned crop: float32 (N,) in (0, 1], higher = better.

    backbone: from ``vcn.faces.backbone.load_backbone`` (or a finetuned copy); not modified.
    crops: uint8 (N, 112, 112, 3) BGR aligned faces; the trunk runs in torch. Reproducible for
    a given ``seed`` (see :func:`serfiq_from_features`).
    """
    return serfiq_from_features(backbone, serfiq_features(backbone, crops, cfg), cfg, seed)


def track_quality(face_scores: np.ndarray, track_index: np.ndarray) -> np.ndarray:
    """Median face score per track: face_scores float (N,), track_index int (N,) in 0..T-1 ->
    float32 (T,) with T = max(track_index) + 1; a track without faces gets NaN."""
    face_scores = np.asarray(face_scores, np.float64)
    track_index = np.asarray(track_index, np.int64)
    if face_scores.shape != track_index.shape or face_scores.ndim != 1:
        raise InputError(
            f"face_scores {face_scores.shape} and track_index {track_index.shape} must be equal (N,)"
        )
    if len(track_index) == 0:
        return np.zeros(0, np.float32)
    if track_index.min() < 0:
        raise InputError("track_index must be non-negative")
    n_tracks = int(track_index.max()) + 1
    out = np.full(n_tracks, np.nan, np.float32)
    order = np.argsort(track_index, kind="stable")
    bounds = np.searchsorted(track_index[order], np.arange(n_tracks + 1))
    for t in range(n_tracks):
        if bounds[t + 1] > bounds[t]:
            out[t] = np.median(face_scores[order[bounds[t] : bounds[t + 1]]])
    return out


def mad_low_outliers(values: np.ndarray, k: float = 3.0) -> np.ndarray:
    """Low outliers: values (T,) -> bool (T,), true where value < median - k * 1.4826 * MAD.

    1.4826 * MAD estimates the standard deviation of normal data. When more than half the
    values are equal (MAD = 0) the mean absolute deviation from the median stands in, so a
    clearly lower value is still flagged; when all values are equal nothing is. NaN -> False.
    """
    values = np.asarray(values, np.float64)
    if k <= 0:
        raise ConfigError(f"mad_low_outliers k={k} must be positive")
    out = np.zeros(values.shape, bool)
    finite = np.isfinite(values)
    if not finite.any():
        return out
    v = values[finite]
    med = np.median(v)
    spread = 1.4826 * np.median(np.abs(v - med))
    if spread == 0:
        spread = 1.2533 * np.mean(np.abs(v - med))  # sqrt(pi/2): mean abs deviation -> sigma
    if spread == 0:
        return out
    out[finite] = v < med - k * spread
    return out


def second_look_tracks(second_look: np.ndarray, track_index: np.ndarray, n_tracks: int) -> np.ndarray:
    """Tracks with a face that only the detector's second look found: bool (T,).

    ``second_look`` bool (N,) per face (:class:`vcn.faces.detection.Detections`), ``track_index``
    (N,) int64 in 0..n_tracks-1. Such a face is among the title's most degraded, and it pulls its
    track's mean away from the person's other tracks, so stage 4 places the track after
    clustering rather than letting it start or bridge clusters
    (:func:`vcn.method.videoclusternet.cluster`).
    """
    second_look = np.asarray(second_look, bool)
    track_index = np.asarray(track_index, np.int64)
    if second_look.shape != track_index.shape:
        raise InputError(f"second_look {second_look.shape} and track_index {track_index.shape} disagree")
    return np.bincount(track_index, second_look, minlength=n_tracks) > 0
