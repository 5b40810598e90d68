"""Video-centralised transformer (VCT): one embedding per track from its sequence of faces.

Wang et al. (arXiv 2203.13166) replace the average of a track's per-frame embeddings by a small
transformer that reads the whole sequence, trained self-supervised on the video itself. vcn's
version reads the frozen recognizer's 512-d face embeddings (``faces.parquet``), so a training
step costs matrix products on short sequences and the stage is linear in tracks:

- input: up to ``seq_len`` faces sampled evenly along the track, each a linear map of its
  embedding plus a sinusoidal code of its frame offset from the sequence's first face;
- a CLS token and ``depth`` pre-norm transformer layers (``width``, ``heads``);
- output: the unit track embedding ``normalize(mean + W . CLS)`` with ``W`` zero at the start,
  so an untrained model *is* average pooling and training only adds what the sequence shows;
- training: two augmented views of each track (temporal crop, frame dropping, embedding noise)
  through a projection head; the loss (:func:`vct_loss`) pulls the two views together, pushes a
  track away from the tracks it shares a frame with (cannot-links) and keeps the batch spread,
  and the track embeddings keep at least the spread over the batch that average pooling gives
  them (without it, training on near-duplicate sequences drew different people together).

Clustering (:func:`cluster_track_embeddings`) is vcn's parameter-free clustering on the track
embeddings, each track's threshold measured between embeddings of augmented views of itself,
then the linking of fragments and the unknowns rule on a per-track quality.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from vcn.errors import ConfigError, InputError
from vcn.method.clustering import first_appearance, parameter_free
from vcn.method.grouping import grow_matches
from vcn.method.linking import link_fragments
from vcn.method.matching import MatchingConfig
from vcn.method.set_distance import CosineDistance, embedding_track_stats
from vcn.method.thresholds import view_thresholds_embedding
from vcn.method.track_quality import mad_low_outliers, track_quality

# Sinusoidal frequencies of the frame-offset code: wavelengths from 2 to about 2000 frames.
_N_FREQ = 8


@dataclass(frozen=True)
class VctConfig:
    """VCT architecture, augmentations and training budget; fixed across videos.

    depth, width, heads: transformer layers, token width and attention heads.
    seq_len: faces per sequence, sampled evenly along the (cropped) track.
    pool_faces: faces kept per track, evenly along it, that views are drawn from (caps memory
        at ``T * pool_faces * 512`` floats).
    proj_dim: output size of the training projection head.
    dropout: transformer dropout while training.
    temperature: softmax temperature of the cannot-link contrast.
    variance_weight: weight of the batch-spread terms that keep the projections from collapsing
        and the track embeddings at least as spread as average pooling leaves them.
    batch_tracks: tracks drawn per step (their cannot-link partners are added to the batch).
    steps_per_track, min_steps, max_steps: steps = clip(steps_per_track * T, min, max).
    lr, weight_decay: AdamW, linear warm-up over a tenth of the steps then cosine decay.
    crop_min: a view keeps a contiguous share in [crop_min, 1] of the track's faces.
    keep_prob: each face of the crop survives frame dropping with this probability.
    noise: standard deviation of the Gaussian noise added to each embedding dimension (the
        unit embedding's dimensions spread about 1 / sqrt(512) = 0.044).
    threshold_views: augmented views per track whose spread sets its clustering threshold.
    matched_positives: also train with coarse matches (two tracks of one person) as positives.
    mad_k: tracks whose quality lies more than ``mad_k`` robust deviations below the median are
        ``unknown`` (:func:`vcn.method.track_quality.mad_low_outliers`).
    """

    depth: int = 2
    width: int = 128
    heads: int = 4
    seq_len: int = 32
    pool_faces: int = 64
    proj_dim: int = 128
    dropout: float = 0.0
    temperature: float = 0.1
    variance_weight: float = 1.0
    batch_tracks: int = 32
    steps_per_track: float = 1.0
    min_steps: int = 100
    max_steps: int = 300
    lr: float = 1e-3
    weight_decay: float = 0.05
    crop_min: float = 0.5
    keep_prob: float = 0.8
    noise: float = 0.01
    threshold_views: int = 8
    matched_positives: bool = False
    mad_k: float = 3.0

    def __post_init__(self) -> None:
        if self.width % self.heads:
            raise ConfigError(f"VctConfig.width={self.width} must be a multiple of heads={self.heads}")
        if min(self.depth, self.seq_len, self.pool_faces, self.batch_tracks, self.threshold_views) < 1:
            raise ConfigError("VctConfig depth, seq_len, pool_faces, batch_tracks must be >= 1")
        if self.threshold_views < 2:
            raise ConfigError("VctConfig.threshold_views must be >= 2 (a threshold needs two views)")
        if not 0.0 < self.crop_min <= 1.0 or not 0.0 < self.keep_prob <= 1.0:
            raise ConfigError("VctConfig.crop_min and keep_prob must lie in (0, 1]")
        if self.min_steps > self.max_steps or self.temperature <= 0 or self.noise < 0:
            raise ConfigError("VctConfig needs min_steps <= max_steps, temperature > 0, noise >= 0")

    def steps(self, n_tracks: int) -> int:
        """Training steps for ``n_tracks`` tracks."""
        return int(np.clip(round(self.steps_per_track * n_tracks), self.min_steps, self.max_steps))


@dataclass(frozen=True)
class TrackSequences:
    """Each track's faces in frame order, padded: ``embeddings`` (T, P, D) float32 unit rows,
    ``frames`` (T, P) int64 frame index, ``length`` (T,) int64 faces held (1..P)."""

    embeddings: np.ndarray
    frames: np.ndarray
    length: np.ndarray


def track_sequences(
    embeddings: np.ndarray, track_index: np.ndarray, frame_idx: np.ndarray, n_tracks: int, pool: int
) -> TrackSequences:
    """Gather ``pool`` faces evenly along each track, in frame order.

    ``embeddings`` (N, D) float, ``track_index`` (N,) int in 0..T-1 with every track present,
    ``frame_idx`` (N,) int. Sampling evenly keeps the cost per track fixed, so the stage is
    linear in tracks. ``O(N log N)``.
    """
    emb = np.asarray(embeddings, np.float32)
    idx = np.asarray(track_index, np.int64)
    frames = np.asarray(frame_idx, np.int64)
    if emb.ndim != 2 or idx.shape != (len(emb),) or frames.shape != idx.shape:
        raise InputError(f"embeddings (N, D), track_index (N,), frame_idx (N,) disagree: "
                         f"{emb.shape}, {idx.shape}, {frames.shape}")
    counts = np.bincount(idx, minlength=n_tracks) if len(idx) else np.zeros(n_tracks, np.int64)
    if len(counts) != n_tracks or np.any(counts == 0):
        raise InputError(f"track_index must cover every track 0..{n_tracks - 1} with at least one face")
    emb = emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
    order = np.lexsort((frames, idx))
    starts = np.r_[0, np.cumsum(counts)[:-1]]
    length = np.minimum(counts, pool)
    # Evenly spaced positions 0..count-1 per track (the first and last face always kept).
    pos = np.arange(pool)[None, :] * (counts[:, None] - 1) / np.maximum(length[:, None] - 1, 1)
    pos = np.minimum(np.round(pos).astype(np.int64), counts[:, None] - 1)
    valid = np.arange(pool)[None, :] < length[:, None]
    rows = order[starts[:, None] + np.where(valid, pos, 0)]
    out = np.where(valid[..., None], emb[rows], 0.0).astype(np.float32)
    return TrackSequences(out, np.where(valid, frames[rows], 0), length.astype(np.int64))


def draw_views(
    seqs: TrackSequences, tracks: np.ndarray, cfg: VctConfig, rng: np.random.Generator, augment: bool = True
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One view of each of ``tracks`` (B,): ``(x (B, L, D) float32, offsets (B, L) float32,
    valid (B, L) bool)`` with ``L = cfg.seq_len``.

    Augmented: a random contiguous crop of ``crop_min``..1 of the faces, each face then dropped
    with probability ``1 - keep_prob`` (one always stays), ``seq_len`` of the rest evenly, and
    Gaussian noise on the embeddings; views of one track share its identity, not its timing.
    Not augmented: ``seq_len`` faces evenly along the whole track.
    """
    n, dim = len(tracks), seqs.embeddings.shape[2]
    big_l = cfg.seq_len
    x = np.zeros((n, big_l, dim), np.float32)
    off = np.zeros((n, big_l), np.float32)
    valid = np.zeros((n, big_l), bool)
    for i, t in enumerate(tracks):
        m = int(seqs.length[t])
        if augment and m > 1:
            span = max(1, math.ceil(rng.uniform(cfg.crop_min, 1.0) * m))
            lo = int(rng.integers(0, m - span + 1))
            keep = np.flatnonzero(rng.random(span) < cfg.keep_prob) + lo
            if len(keep) == 0:
                keep = np.array([lo + int(rng.integers(span))])
        else:
            keep = np.arange(m)
        if len(keep) > big_l:
            keep = keep[np.round(np.linspace(0, len(keep) - 1, big_l)).astype(np.int64)]
        k = len(keep)
        x[i, :k] = seqs.embeddings[t, keep]
        fr = seqs.frames[t, keep]
        off[i, :k] = fr - fr[0]
        valid[i, :k] = True
    if augment and cfg.noise > 0:
        x += rng.normal(0.0, cfg.noise, x.shape).astype(np.float32) * valid[..., None]
        x /= np.maximum(np.linalg.norm(x, axis=2, keepdims=True), 1e-12)
    return x, off, valid


def _offset_code(offsets: torch.Tensor) -> torch.Tensor:
    """(B, L) frame offsets -> (B, L, 2 * _N_FREQ) sines and cosines."""
    wavelengths = 2.0 * (1000.0 ** (torch.arange(_N_FREQ, dtype=torch.float32) / (_N_FREQ - 1)))
    angle = offsets[..., None] * (2 * math.pi / wavelengths)
    return torch.cat([torch.sin(angle), torch.cos(angle)], dim=-1)


class TrackEncoder(nn.Module):
    """Sequence of face embeddings -> one unit track embedding of the same size.

    ``normalize(mean + W . CLS)``: ``W`` starts at zero, so the untrained encoder returns the
    mean of the sequence (average pooling) and training learns the correction the sequence
    supports; a title-sized training set is too small to learn identity from nothing.
    """

    def __init__(self, cfg: VctConfig, in_dim: int = 512) -> None:
        super().__init__()
        w = cfg.width
        self.inp = nn.Linear(in_dim, w)
        self.pos = nn.Linear(2 * _N_FREQ, w)
        self.cls = nn.Parameter(torch.randn(1, 1, w) * 0.02)
        layer = nn.TransformerEncoderLayer(w, cfg.heads, 2 * w, cfg.dropout, activation="gelu",
                                           batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, cfg.depth, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(w)
        self.out = nn.Linear(w, in_dim)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x: torch.Tensor, offsets: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """``x`` (B, L, D), ``offsets`` (B, L) frames, ``valid`` (B, L) bool -> (B, D) unit rows."""
        mask = valid[..., None].to(x.dtype)
        mean = F.normalize((x * mask).sum(1) / mask.sum(1).clamp_min(1.0), dim=-1)
        tokens = self.inp(x) + self.pos(_offset_code(offsets))
        seq = torch.cat([self.cls.expand(len(x), -1, -1), tokens], dim=1)
        pad = torch.cat([torch.zeros(len(x), 1, dtype=torch.bool), ~valid], dim=1)
        h = self.encoder(seq, src_key_padding_mask=pad)[:, 0]
        return F.normalize(mean + self.out(self.norm(h)), dim=-1)


class ProjectionHead(nn.Module):
    """Training-only head: (B, D) track embeddings -> (B, proj_dim) un-normalised outputs."""

    def __init__(self, cfg: VctConfig, in_dim: int = 512) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(in_dim, 2 * cfg.proj_dim), nn.GELU(),
                                 nn.Linear(2 * cfg.proj_dim, cfg.proj_dim))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)


def vct_loss(
    p1: torch.Tensor, p2: torch.Tensor, positive: torch.Tensor, negative: torch.Tensor, cfg: VctConfig
) -> tuple[torch.Tensor, dict[str, float]]:
    """Loss of one batch: alignment + cannot-link contrast + batch spread.

    ``p1``, ``p2`` (B, K) projections of two views of the batch's tracks; ``positive`` (B, B)
    bool (the diagonal, plus matched tracks), ``negative`` (B, B) bool cannot-link pairs. The
    only tracks pushed apart are ones that share a frame, which are two people for certain; other
    tracks of the batch are never negatives, because a title's batch holds many tracks of each
    lead and repelling them would split people. Collapse is prevented instead by a VICReg-style
    term that keeps each dimension's standard deviation over the batch of the unit outputs at
    least that of a uniform spread (``1 / sqrt(K)``): it spreads the batch as a whole but lets
    two tracks coincide. Terms: ``1 - cos`` between positives; ``-log softmax`` of the positives
    among positives and cannot-links (rows with a cannot-link only);
    ``mean relu(1 - sqrt(K) std)``.
    """
    z1, z2 = F.normalize(p1, dim=-1), F.normalize(p2, dim=-1)
    sim = z1 @ z2.T
    pos = positive.to(sim.dtype)
    align = ((1.0 - sim) * pos).sum() / pos.sum()
    rows = negative.any(dim=1)
    contrast = sim.new_zeros(())
    if bool(rows.any()):
        logits = sim / cfg.temperature
        both = (logits.masked_fill(~(positive | negative), -torch.inf)).logsumexp(1)
        num = logits.masked_fill(~positive, -torch.inf).logsumexp(1)
        contrast = (both - num)[rows].mean()
    z = torch.cat([z1, z2])
    spread = F.relu(1.0 - math.sqrt(z.shape[1]) * torch.sqrt(z.var(dim=0) + 1e-8)).mean()
    total = align + contrast + cfg.variance_weight * spread
    return total, {"align": float(align.detach()), "contrast": float(contrast.detach()),
                   "spread": float(spread.detach())}


def _pair_sets(pairs: np.ndarray, n: int) -> list[np.ndarray]:
    """Partners of each of ``n`` items in ``pairs`` (P, 2)."""
    pairs = np.asarray(pairs, np.int64).reshape(-1, 2)
    both = np.concatenate([pairs, pairs[:, ::-1]])
    order = np.argsort(both[:, 0], kind="stable")
    both = both[order]
    bounds = np.searchsorted(both[:, 0], np.arange(n + 1))
    return [both[bounds[i]:bounds[i + 1], 1] for i in range(n)]


def _pair_codes(pairs: np.ndarray, n: int) -> np.ndarray:
    """Sorted codes ``min * n + max`` of unordered pairs (P, 2)."""
    p = np.sort(np.asarray(pairs, np.int64).reshape(-1, 2), axis=1)
    return np.unique(p[:, 0] * n + p[:, 1])


def _batch(anchors: np.ndarray, cannot: list[np.ndarray], cap: int, rng: np.random.Generator) -> np.ndarray:
    """The anchors plus one random cannot-link partner of each (unique, at most ``cap``)."""
    extra = [c[rng.integers(len(c))] for a in anchors if len(c := cannot[a])]
    out = np.unique(np.concatenate([anchors, np.asarray(extra, np.int64)]))
    return out if len(out) <= cap else rng.choice(out, cap, replace=False)


@dataclass
class VctModel:
    """A trained encoder and its record: ``losses`` one per step, ``seconds`` of training."""

    encoder: TrackEncoder
    steps: int
    losses: list[float] = field(default_factory=list)
    seconds: float = 0.0


def train_vct(
    seqs: TrackSequences,
    cannot_link: np.ndarray,
    cfg: VctConfig,
    seed: int,
    matches: np.ndarray | None = None,
) -> VctModel:
    """Train the encoder on one title's tracks, self-supervised.

    ``cannot_link`` (P, 2) int64 co-occurring track pairs (negatives); ``matches`` (M, 2) int64
    track pairs of one person (extra positives, used with ``cfg.matched_positives``). Each step
    draws ``batch_tracks`` tracks and a cannot-link partner of each, two augmented views of every
    one, and minimises :func:`vct_loss` plus ``variance_weight * mean relu(1 - std / std_avg)``,
    with ``std`` each dimension's standard deviation of the batch's track embeddings and
    ``std_avg`` that of their average pooling: the sequence may move a track, not draw the
    title's tracks together. Runs on the CPU with torch's thread setting.
    """
    n = len(seqs.length)
    if n < 2:
        raise InputError(f"VCT needs at least two tracks, got {n}")
    started = time.perf_counter()
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    dim = seqs.embeddings.shape[2]
    encoder, head, pool = TrackEncoder(cfg, dim), ProjectionHead(cfg, dim), MeanPool()
    params = [*encoder.parameters(), *head.parameters()]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps = cfg.steps(n)
    warm = max(1, steps // 10)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / warm) * 0.5 * (
        1 + math.cos(math.pi * max(0, s - warm) / max(1, steps - warm))))
    cannot = _pair_sets(cannot_link, n)
    cl_codes = _pair_codes(cannot_link, n)
    same_codes = _pair_codes(matches, n) if matches is not None and cfg.matched_positives else None
    encoder.train()
    head.train()
    losses = []
    for _ in range(steps):
        anchors = rng.choice(n, min(cfg.batch_tracks, n), replace=False)
        batch = _batch(anchors, cannot, 2 * cfg.batch_tracks, rng)
        codes = np.minimum(batch[:, None], batch[None, :]) * n + np.maximum(batch[:, None], batch[None, :])
        neg = np.isin(codes, cl_codes)
        posm = np.eye(len(batch), dtype=bool)
        if same_codes is not None:
            posm |= np.isin(codes, same_codes) & ~neg
        views = [draw_views(seqs, batch, cfg, rng) for _ in range(2)]
        tensors = [tuple(map(torch.from_numpy, v)) for v in views]
        e = [encoder(*t) for t in tensors]
        p = [head(x) for x in e]
        loss, _ = vct_loss(p[0], p[1], torch.from_numpy(posm), torch.from_numpy(neg), cfg)
        with torch.no_grad():
            pooled = torch.cat([pool(*t) for t in tensors]).std(dim=0)
        # The track embeddings keep at least the spread average pooling gives the batch.
        kept = F.relu(1.0 - torch.cat(e).std(dim=0) / pooled.clamp_min(1e-6)).mean()
        loss = loss + cfg.variance_weight * kept
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 3.0)
        opt.step()
        sched.step()
        losses.append(float(loss.detach()))
    encoder.eval()
    return VctModel(encoder, steps, losses, time.perf_counter() - started)


@torch.no_grad()
def embed_tracks(
    encoder: nn.Module, seqs: TrackSequences, cfg: VctConfig, seed: int, views: int = 0, batch: int = 256
) -> np.ndarray:
    """Track embeddings: ``views`` 0 -> (T, D) of the whole tracks; else (T, views, D) of
    augmented views (the same augmentations as training). ``encoder`` in eval mode."""
    rng = np.random.default_rng(seed)
    n = len(seqs.length)
    reps = max(views, 1)
    out = np.zeros((n, reps, seqs.embeddings.shape[2]), np.float32)
    for r in range(reps):
        for lo in range(0, n, batch):
            tracks = np.arange(lo, min(n, lo + batch))
            x, off, valid = draw_views(seqs, tracks, cfg, rng, augment=views > 0)
            z = encoder(torch.from_numpy(x), torch.from_numpy(off), torch.from_numpy(valid))
            out[tracks, r] = z.numpy()
    return out if views else out[:, 0]


class MeanPool(nn.Module):
    """Average pooling as an encoder (the Temp Avg baseline): the unit mean of the sequence."""

    def forward(self, x: torch.Tensor, offsets: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        mask = valid[..., None].to(x.dtype)
        return F.normalize((x * mask).sum(1) / mask.sum(1).clamp_min(1.0), dim=-1)


@dataclass
class VctClustering:
    """Outcome of :func:`cluster_track_embeddings`: ``labels`` (T,) int64 (-1 = unknown),
    ``quality`` (T,) float32, ``unknown`` (T,) bool, ``thresholds`` (T,) float64 view thresholds
    (NaN for unknown tracks), ``rounds`` of the parameter-free merging, ``linked`` clusters
    joined by the linking of fragments."""

    labels: np.ndarray
    quality: np.ndarray
    unknown: np.ndarray
    thresholds: np.ndarray
    rounds: int
    linked: int


def cluster_track_embeddings(
    track_emb: np.ndarray,
    view_emb: np.ndarray,
    face_quality: np.ndarray,
    face_track: np.ndarray,
    cannot_link: np.ndarray,
    mad_k: float = 3.0,
) -> VctClustering:
    """Parameter-free clustering of one embedding per track, with vcn's unknowns rule.

    ``track_emb`` (T, D) unit track embeddings; ``view_emb`` (T, V, D) embeddings of ``V``
    augmented views of each track, whose mean pairwise cosine distance is the track's threshold
    (:func:`vcn.method.thresholds.view_thresholds_embedding`: how far the model moves one person's
    track under crops, drops and noise); ``face_quality`` (N,) float per face and
    ``face_track`` (N,) int its track: a track's quality is their median, and low outliers
    (:func:`vcn.method.track_quality.mad_low_outliers`) are ``unknown``; ``cannot_link`` (P, 2) int64
    pairs never joined. Clusters then join their larger nearest cluster within its extent
    (:func:`vcn.method.linking.link_fragments`).
    """
    track_emb = np.asarray(track_emb, np.float64)
    n = len(track_emb)
    if view_emb.shape[0] != n or view_emb.ndim != 3:
        raise InputError(f"view_emb must be (T, V, D) with T={n}, got {view_emb.shape}")
    quality = track_quality(face_quality, face_track)
    if len(quality) != n:
        raise InputError(f"face_track covers {len(quality)} tracks, embeddings {n}")
    unknown = mad_low_outliers(np.nan_to_num(quality, nan=-np.inf), mad_k) | ~np.isfinite(quality)
    labels = np.full(n, -1, np.int64)
    thr_all = np.full(n, np.nan)
    keep = np.flatnonzero(~unknown)
    if len(keep) == 0:
        return VctClustering(labels, quality, unknown, thr_all, 0, 0)
    remap = np.full(n, -1, np.int64)
    remap[keep] = np.arange(len(keep))
    cl = remap[np.asarray(cannot_link, np.int64).reshape(-1, 2)]
    cl = cl[(cl >= 0).all(axis=1)]
    own = np.arange(len(keep))
    thresholds = view_thresholds_embedding(view_emb[keep], own, "cosine")
    stats = embedding_track_stats(track_emb[keep], own, "cosine")
    result = parameter_free(stats, CosineDistance(), thresholds, cl)
    linked = link_fragments(track_emb[keep], result.labels, cl)
    labels[keep] = first_appearance(linked)
    thr_all[keep] = thresholds
    return VctClustering(labels, quality, unknown, thr_all, len(result.rounds),
                         int(result.labels.max()) - int(linked.max()))


@dataclass
class VctResult:
    """Outcome of :func:`run_vct`: the clustering, the (T, D) track embeddings, the matches used
    as positives (M, 2), training steps, final loss (mean of the last 20 steps) and seconds of
    the whole stage (``seconds``) and of training (``train_seconds``)."""

    clustering: VctClustering
    track_embeddings: np.ndarray
    matches: np.ndarray
    steps: int
    final_loss: float
    seconds: float
    train_seconds: float


def coarse_track_matches(seqs: TrackSequences, cannot_link: np.ndarray, per_track: int = 8) -> np.ndarray:
    """(M, 2) int64 track pairs that vcn's coarse matching links on the frozen embeddings of
    ``per_track`` faces per track (:func:`vcn.method.grouping.grow_matches`, mutual)."""
    n, lengths = len(seqs.length), seqs.length[:, None]
    pick = np.minimum(np.arange(per_track)[None, :] * lengths // per_track, lengths - 1)
    emb = seqs.embeddings[np.arange(n)[:, None], pick].reshape(-1, seqs.embeddings.shape[2])
    index = np.repeat(np.arange(n), per_track)
    cannot = np.asarray(cannot_link, np.int64).reshape(-1, 2)
    return grow_matches(emb, index, MatchingConfig(mutual=True), cannot)


def run_vct(
    embeddings: np.ndarray,
    track_index: np.ndarray,
    frame_idx: np.ndarray,
    face_quality: np.ndarray,
    cannot_link: np.ndarray,
    cfg: VctConfig,
    seed: int,
    train: bool = True,
) -> VctResult:
    """The VCT stage on one title: sequences, training, track embeddings, clustering.

    ``embeddings`` (N, D) frozen face embeddings, ``track_index`` (N,) int64 in 0..T-1,
    ``frame_idx`` (N,) int64, ``face_quality`` (N,) float (the unknowns rule's score),
    ``cannot_link`` (P, 2) int64 co-occurring track pairs. ``train`` False clusters the
    untrained encoder, i.e. average pooling (the Temp Avg baseline) with the same clustering.
    """
    started = time.perf_counter()
    n = int(np.max(track_index)) + 1 if len(track_index) else 0
    seqs = track_sequences(embeddings, track_index, frame_idx, n, cfg.pool_faces)
    matches = coarse_track_matches(seqs, cannot_link) if cfg.matched_positives else np.zeros((0, 2), np.int64)
    encoder: nn.Module = MeanPool()
    steps, final, train_s = 0, float("nan"), 0.0
    if train and n >= 2:
        model = train_vct(seqs, cannot_link, cfg, seed, matches)
        encoder, steps, train_s = model.encoder, model.steps, model.seconds
        final = float(np.mean(model.losses[-20:]))
    track_emb = embed_tracks(encoder, seqs, cfg, seed)
    views = embed_tracks(encoder, seqs, cfg, seed + 1, views=cfg.threshold_views)
    clustering = cluster_track_embeddings(track_emb, views, face_quality, track_index, cannot_link, cfg.mad_k)
    return VctResult(clustering, track_emb, matches, steps, final, time.perf_counter() - started, train_s)
