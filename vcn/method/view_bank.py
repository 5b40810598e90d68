"""The generic recognizer's embeddings of every sampled face's views, computed once per title.

The per-title model of VideoClusterNet adapts only what follows the frozen recognizer
(:mod:`vcn.method.finetune`: a linear adapter and the DINO head), so every view a stage needs is
embedded once, by the generic model, here: the views each matching draw scores, the threshold
views of stage 4 (which add wide framing, low light and noise), and the SER-FIQ quality of each
face. The finetune samples its augmented views from the same bank. Later stages then cost matrix
products on 512-d rows instead of CNN passes over images.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from vcn.errors import InputError
from vcn.faces.backbone import OnnxBackbone, preprocess
from vcn.method.track_quality import SerFiqConfig, serfiq_from_features
from vcn.method.views import ViewConfig, strong_view_blocks

Embed = Callable[[np.ndarray], np.ndarray]
# Crops -> (unit embeddings (N, D), activations at SER-FIQ's dropout point (N, ...)), one pass.
EmbedWithFeatures = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]

# Faces whose views are drawn and embedded at once (64 faces x 10 views: 24 MB of pixels).
_BLOCK = 64
# Clean crops embedded, and scored by SER-FIQ, at once: their dropout-point activations take
# 12.5 KB a face (MobileFaceNet), over half a gigabyte for a 2-hour film if held whole. A multiple
# of the engines' batches, so the batches, and the numbers, are those of one pass over all crops.
_QUALITY_BLOCK = 1024


@dataclass(frozen=True)
class ViewBank:
    """Generic embeddings of the views of N faces; view 0 of every set is the clean crop.

    match: float16 (R, N, Vm, D), the views of R matching draws. thresh: float16 (N, Vt, D),
    the threshold views. quality: float32 (N,) SER-FIQ score of each clean crop.
    """

    match: np.ndarray
    thresh: np.ndarray
    quality: np.ndarray

    def __post_init__(self) -> None:
        r, n, _, d = self.match.shape
        if r < 1 or self.thresh.shape[0] != n or self.thresh.shape[2] != d or self.quality.shape != (n,):
            raise InputError(
                f"ViewBank parts disagree: match {self.match.shape}, thresh {self.thresh.shape}, "
                f"quality {self.quality.shape}"
            )

    @property
    def n_faces(self) -> int:
        return self.match.shape[1]

    @property
    def clean(self) -> np.ndarray:
        """float32 (N, D) embeddings of the clean crops."""
        return self.match[0, :, 0].astype(np.float32)

    def training_views(self) -> np.ndarray:
        """float16 (N, R*Vm + Vt, D): every view of each face, the pool the finetune draws from."""
        per_face = np.concatenate(list(self.match), axis=1)
        return np.concatenate([per_face, self.thresh], axis=1)


def embed_crops(backbone: OnnxBackbone, crops: np.ndarray, batch: int, device: torch.device) -> np.ndarray:
    """float32 (N, D) L2-normalised generic embeddings of uint8 (N, 112, 112, 3) BGR crops by the
    torch copy of the recognizer on ``device`` (bf16 autocast on CUDA)."""
    out = []
    backbone.eval()
    with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda"):
        for i in range(0, len(crops), batch):
            x = preprocess(crops[i:i + batch], backbone.input_mean, backbone.input_std).to(device)
            out.append(F.normalize(backbone(x).float(), dim=-1).cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, 512), np.float32)


def embed_crops_with_features(
    backbone: OnnxBackbone, crops: np.ndarray, point: str, batch: int, device: torch.device
) -> tuple[np.ndarray, np.ndarray]:
    """(float32 (N, D) unit embeddings, float32 (N, ...) activations at ``point``) of uint8
    (N, 112, 112, 3) BGR crops by the torch recognizer on ``device``, in float32."""
    emb, feats = [], []
    backbone.eval()
    with torch.no_grad():
        for i in range(0, len(crops), batch):
            x = preprocess(crops[i:i + batch], backbone.input_mean, backbone.input_std).to(device)
            h = backbone.run(x, stop=point)
            emb.append(F.normalize(backbone.run(h, start=point).float(), dim=-1).cpu().numpy())
            feats.append(h.float().cpu().numpy())
    if not emb:
        return np.zeros((0, 512), np.float32), np.zeros((0,), np.float32)
    return np.concatenate(emb), np.concatenate(feats)


def _views(
    embed: Embed, crops: np.ndarray, clean: np.ndarray, cfg: ViewConfig, seed: int | tuple[int, int]
) -> np.ndarray:
    """float16 (N, V, D): view 0 the given clean embeddings, the others drawn and embedded."""
    parts = []
    blocks = strong_view_blocks(crops, cfg, seed, _BLOCK)
    for lo, views in zip(range(0, len(crops), _BLOCK), blocks, strict=True):
        aug = embed(views[:, 1:].reshape(-1, *views.shape[2:])).reshape(len(views), cfg.n_views - 1, -1)
        parts.append(np.concatenate([clean[lo:lo + len(views), None], aug], axis=1).astype(np.float16))
    return np.concatenate(parts) if parts else np.zeros((0, cfg.n_views, clean.shape[1]), np.float16)


def build_view_bank(
    embed: EmbedWithFeatures,
    embed_views: Embed,
    backbone: OnnxBackbone,
    crops: np.ndarray,
    match_views: ViewConfig,
    threshold_views: ViewConfig,
    draws: int,
    serfiq: SerFiqConfig,
    seed: int,
) -> ViewBank:
    """Embed the views of ``crops`` (N, 112, 112, 3) uint8 once with the generic recognizer.

    ``embed`` maps the clean crops to float32 (M, D) unit rows (the recognizer on OpenVINO,
    onnxruntime or torch) and their activations at SER-FIQ's dropout point
    (:func:`vcn.method.track_quality.dropout_point`), ``embed_views`` maps augmented views to unit rows
    (it may round more); ``backbone`` is the torch copy, whose last layers score SER-FIQ. Draw ``d``
    of the matching views comes from ``seed`` for ``d = 0`` and from ``(seed, d)`` after; the
    threshold views from ``seed + 1``. Views are drawn and embedded a block of faces at a time,
    and the clean crops scored by SER-FIQ likewise, so memory holds one block of pixels and of
    activations; the bank itself is 1 KB per view.
    """
    crops = np.asarray(crops)
    if crops.ndim != 4 or crops.shape[1:] != (112, 112, 3) or crops.dtype != np.uint8:
        raise InputError(
            f"build_view_bank expects uint8 (N, 112, 112, 3) aligned crops, got {crops.dtype} {crops.shape}"
        )
    clean_parts, quality_parts = [], []
    for lo in range(0, max(len(crops), 1), _QUALITY_BLOCK):
        emb, features = embed(crops[lo:lo + _QUALITY_BLOCK])
        clean_parts.append(emb)
        quality_parts.append(serfiq_from_features(backbone, features, serfiq, seed))
    clean, quality = np.concatenate(clean_parts), np.concatenate(quality_parts)
    match = np.stack([_views(embed_views, crops, clean, match_views, seed if d == 0 else (seed, d))
                      for d in range(draws)])
    thresh = _views(embed_views, crops, clean, threshold_views, seed + 1)
    return ViewBank(match, thresh, quality.astype(np.float32))
