"""Augmented views of aligned face crops: the spread that matching and thresholds measure.

A track's own threshold in the paper is the mean loss among its faces. Tracks cut from static
shots are near-duplicates inside (median cosine distance ~0.03 on composed episodes against
0.15-0.26 on real footage), so that threshold is far too tight and nothing merges. Measuring it
between strongly augmented views of the faces instead (random resized crop, flip, brightness,
contrast, saturation, grey, blur: the invariances DINO trains for) gives thresholds that are
nearly constant across videos (docs/method.md), with no user parameter. Coarse matching scores
the same views. The stage-4 thresholds use :data:`SHOT_VIEWS`, which add what a shot does to a
face (wide framing, low light, sensor noise).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from vcn.errors import ConfigError


@dataclass(frozen=True)
class ViewConfig:
    """Strength of the threshold views (DINO's global-crop recipe, on 112x112 crops).

    n_views: views per face, the clean crop included. scale, ratio: random resized crop area
    fraction and aspect range. brightness, contrast, saturation: multiplicative ranges.
    grey_p, blur_p: probabilities of greyscale and Gaussian blur (sigma in blur_sigma).
    low_res_p, low_res_px: probability of a wide-shot copy: the face shrunk to a side drawn from
        ``low_res_px`` pixels and scaled back up. dark_p, dark_gamma: probability of a low-light
        copy, pixel values raised to a gamma drawn from ``dark_gamma``. noise_p, noise_sigma:
        probability and standard deviation range (grey levels) of sensor noise. Off (0) for the
        matching views; on in :data:`SHOT_VIEWS`, the threshold views.
    """

    n_views: int = 4
    scale: tuple[float, float] = (0.5, 1.0)
    ratio: tuple[float, float] = (0.75, 4 / 3)
    brightness: tuple[float, float] = (0.6, 1.4)
    contrast: tuple[float, float] = (0.6, 1.4)
    saturation: tuple[float, float] = (0.8, 1.2)
    grey_p: float = 0.2
    blur_p: float = 0.5
    blur_sigma: tuple[float, float] = (0.1, 2.0)
    low_res_p: float = 0.0
    low_res_px: tuple[int, int] = (20, 56)
    dark_p: float = 0.0
    dark_gamma: tuple[float, float] = (1.0, 2.5)
    noise_p: float = 0.0
    noise_sigma: tuple[float, float] = (2.0, 12.0)

    def __post_init__(self) -> None:
        if self.n_views < 2:
            raise ConfigError(f"ViewConfig.n_views={self.n_views} must be >= 2 (the clean crop plus one)")
        for name in ("grey_p", "blur_p", "low_res_p", "dark_p", "noise_p"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ConfigError(f"ViewConfig.{name}={getattr(self, name)} must lie in [0, 1]")
        if not 4 <= self.low_res_px[0] <= self.low_res_px[1]:
            raise ConfigError(f"ViewConfig.low_res_px={self.low_res_px} must be an increasing pair >= 4")


# Threshold views: the strong views plus what a shot does to a face (wide framing, low light,
# noise), drawn from ranges set once, not fitted to any video. Ten per face: a track of eight
# faces then has 80 items and over 3,000 pairs to average (docs/method.md, "Cost").
SHOT_VIEWS = ViewConfig(n_views=10, low_res_p=0.5, dark_p=0.5, noise_p=0.5)


def strong_view(crop: np.ndarray, cfg: ViewConfig, rng: np.random.Generator) -> np.ndarray:
    """One augmented copy of a (112, 112, 3) uint8 BGR crop."""
    size = crop.shape[0]
    area = rng.uniform(*cfg.scale)
    aspect = np.exp(rng.uniform(np.log(cfg.ratio[0]), np.log(cfg.ratio[1])))
    w = min(size, round(size * np.sqrt(area * aspect)))
    h = min(size, round(size * np.sqrt(area / aspect)))
    x0, y0 = rng.integers(0, size - w + 1), rng.integers(0, size - h + 1)
    img = cv2.resize(crop[y0:y0 + h, x0:x0 + w], (size, size), interpolation=cv2.INTER_LINEAR)
    if rng.random() < 0.5:
        img = img[:, ::-1]
    f = img.astype(np.float32) * rng.uniform(*cfg.brightness)
    mean = f.mean()
    f = (f - mean) * rng.uniform(*cfg.contrast) + mean
    grey = f.mean(axis=2, keepdims=True)
    f = (f - grey) * rng.uniform(*cfg.saturation) + grey
    if rng.random() < cfg.grey_p:
        f = np.repeat(f.mean(axis=2, keepdims=True), 3, axis=2)
    out = np.clip(f, 0, 255).astype(np.uint8)
    if rng.random() < cfg.blur_p:
        out = cv2.GaussianBlur(out, (0, 0), rng.uniform(*cfg.blur_sigma))
    # Shot degradations draw only when enabled, so the matching views stay as they were.
    if cfg.low_res_p > 0 and rng.random() < cfg.low_res_p:
        side = int(rng.integers(cfg.low_res_px[0], cfg.low_res_px[1] + 1))
        small = cv2.resize(out, (side, side), interpolation=cv2.INTER_AREA)
        out = cv2.resize(small, (size, size), interpolation=cv2.INTER_LINEAR)
    if cfg.dark_p > 0 and rng.random() < cfg.dark_p:
        gamma = rng.uniform(*cfg.dark_gamma)
        out = (255.0 * (out.astype(np.float32) / 255.0) ** gamma).astype(np.uint8)
    if cfg.noise_p > 0 and rng.random() < cfg.noise_p:
        noisy = out.astype(np.float32) + rng.normal(0.0, rng.uniform(*cfg.noise_sigma), out.shape)
        out = np.clip(noisy, 0, 255).astype(np.uint8)
    return np.ascontiguousarray(out)


def _draw(crops: np.ndarray, cfg: ViewConfig, rng: np.random.Generator) -> np.ndarray:
    out = np.empty((len(crops), cfg.n_views, *crops.shape[1:]), np.uint8)
    out[:, 0] = crops
    for i in range(len(crops)):
        for v in range(1, cfg.n_views):
            out[i, v] = strong_view(crops[i], cfg, rng)
    return out


def strong_views(crops: np.ndarray, cfg: ViewConfig, seed: int | Sequence[int]) -> np.ndarray:
    """Views of every crop: (N, 112, 112, 3) uint8 -> (N, V, 112, 112, 3) uint8, view 0 clean.

    ``seed``: an int, or a sequence of ints (e.g. ``(seed, block)`` to draw a long list of crops
    block by block without holding every view at once)."""
    return _draw(crops, cfg, np.random.default_rng(seed))


def strong_view_blocks(
    crops: np.ndarray, cfg: ViewConfig, seed: int | Sequence[int], block: int
) -> Iterator[np.ndarray]:
    """The views of :func:`strong_views`, ``block`` crops at a time.

    Yields (B, V, 112, 112, 3) uint8 for ``crops[lo:lo + block]``, lo = 0, block, ...; one
    generator walks the crops in order, so the blocks concatenate to exactly
    ``strong_views(crops, cfg, seed)`` while only one block of views is held at a time (a track
    of 8 faces has 1.8 MB of 6 views; 5,000 tracks would need 9 GB at once).
    """
    if block < 1:
        raise ConfigError(f"block={block} must be >= 1")
    return _blocks(crops, cfg, np.random.default_rng(seed), block)


def _blocks(crops: np.ndarray, cfg: ViewConfig, rng: np.random.Generator, block: int) -> Iterator[np.ndarray]:
    for lo in range(0, len(crops), block):
        yield _draw(crops[lo:lo + block], cfg, rng)
