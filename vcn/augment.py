"""Batch augmentations of aligned face crops for the self-supervised finetune.

The views of a positive pair differ the way two faces of one person differ across shots:
mirrored framing, a slight head roll, and a warm or cool colour cast. Everything runs in torch
on whole batches (CPU or CUDA) and every random draw comes from the ``torch.Generator`` handed
in, so a finetune is reproducible from its seed and resumable from the generator's state.

Tensors are float32 (B, 3, H, W) RGB normalised like ``vcn.backbone.preprocess``:
``(pixel - mean) / std`` with the backbone's mean and std (127.5 / 127.5 for ArcFace).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from vcn.errors import ConfigError


@dataclass(frozen=True)
class AugmentConfig:
    """Strength of each augmentation; 0 disables it.

    flip_p: probability of a horizontal flip (aligned crops are near-symmetric, so a mirrored
        face is still the same identity to ArcFace).
    max_rotation_deg: roll drawn uniformly in [-max, +max] about the crop centre; 10 degrees is
        the residual roll left by 5-point alignment on turned heads.
    temperature: channel gains R = 1 + t*u, B = 1 - t*u with u uniform in [-1, 1]: u > 0 warms
        (tungsten), u < 0 cools (daylight). 0.25 matches the casts of low-light TV scenes.
    input_mean, input_std: the normalisation of the tensors (the backbone's), used to apply the
        colour gains to pixel values rather than to normalised values.
    """

    flip_p: float = 0.5
    max_rotation_deg: float = 10.0
    temperature: float = 0.25
    input_mean: float = 127.5
    input_std: float = 127.5

    def __post_init__(self) -> None:
        if not 0.0 <= self.flip_p <= 1.0:
            raise ConfigError(f"AugmentConfig.flip_p={self.flip_p} must lie in [0, 1]")
        if not 0.0 <= self.max_rotation_deg <= 45.0:
            raise ConfigError(f"AugmentConfig.max_rotation_deg={self.max_rotation_deg} must lie in [0, 45]")
        if not 0.0 <= self.temperature < 1.0:
            raise ConfigError(f"AugmentConfig.temperature={self.temperature} must lie in [0, 1)")
        if self.input_std <= 0:
            raise ConfigError(f"AugmentConfig.input_std={self.input_std} must be positive")


def _uniform(n: int, lo: float, hi: float, generator: torch.Generator) -> torch.Tensor:
    # Draws are made on the generator's device (CPU by default) so that the random stream, and
    # hence the finetune, does not depend on where the batch lives.
    return lo + (hi - lo) * torch.rand(n, generator=generator, device=generator.device)


def hflip(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mirror the images of x (B, 3, H, W) where mask (B,) bool is true."""
    return torch.where(mask.view(-1, 1, 1, 1).to(x.device), x.flip(-1), x)


def rotate(x: torch.Tensor, degrees: torch.Tensor) -> torch.Tensor:
    """Rotate each image of x (B, 3, H, W) by degrees (B,) about its centre.

    Bilinear; pixels from outside the crop repeat the border, so no grey corners appear that
    the model could use to tell views apart.
    """
    theta = degrees.to(x.device, x.dtype) * (math.pi / 180.0)
    cos, sin = torch.cos(theta), torch.sin(theta)
    zero = torch.zeros_like(cos)
    mat = torch.stack([torch.stack([cos, -sin, zero], -1), torch.stack([sin, cos, zero], -1)], 1)
    grid = F.affine_grid(mat, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def colour_temperature(x: torch.Tensor, warmth: torch.Tensor, cfg: AugmentConfig) -> torch.Tensor:
    """Warm (warmth > 0) or cool (< 0) each RGB image of x (B, 3, H, W); warmth (B,) in [-1, 1].

    Gains act on pixel values (0..255) and clip there, like a cast applied by a camera.
    """
    w = warmth.to(x.device, x.dtype) * cfg.temperature
    gains = torch.stack([1 + w, torch.ones_like(w), 1 - w], 1).view(-1, 3, 1, 1)
    pixels = x * cfg.input_std + cfg.input_mean
    return ((pixels * gains).clamp(0.0, 255.0) - cfg.input_mean) / cfg.input_std


def augment(x: torch.Tensor, cfg: AugmentConfig, generator: torch.Generator) -> torch.Tensor:
    """A random view of every image of x: float32 (B, 3, H, W) RGB normalised -> same shape.

    Draws 3 numbers per image from ``generator`` in a fixed order (flip, roll, warmth), even
    for disabled augmentations, so that changing one strength does not reshuffle the others.
    """
    if x.dim() != 4 or x.shape[1] != 3:
        raise ConfigError(f"augment expects (B, 3, H, W) tensors, got {tuple(x.shape)}")
    b = x.shape[0]
    flip = _uniform(b, 0.0, 1.0, generator) < cfg.flip_p
    roll = _uniform(b, -cfg.max_rotation_deg, cfg.max_rotation_deg, generator)
    warmth = _uniform(b, -1.0, 1.0, generator)
    if cfg.flip_p > 0:
        x = hflip(x, flip)
    if cfg.max_rotation_deg > 0:
        x = rotate(x, roll)
    if cfg.temperature > 0:
        x = colour_temperature(x, warmth, cfg)
    return x
