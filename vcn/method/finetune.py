"""Per-video self-supervised finetune of the face recognizer (DINO with positives only).

VideoClusterNet adapts the generic face model to one video without labels: a student and a
teacher (linear adapter + DINO projection head) see two views of a positive pair, two faces of
one track or faces of two tracks that coarse matching linked, and the student learns to predict
the teacher's centred, sharpened distribution over K prototypes. There are no negatives; centring
and sharpening keep the outputs from collapsing. The teacher is an EMA of the student.

The recognizer itself stays frozen: the per-title model is a linear map of its 512-d embedding
(:class:`Adapter`, the identity at the start), so every view is embedded once by the generic
model (:mod:`vcn.method.view_bank`) and a training step, a matching pass or a threshold costs matrix
products on 512-d rows. Budgets (steps, batch, LRs) are fixed functions of the number of tracks,
never tuned per video.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from vcn.errors import ConfigError, InputError


@dataclass(frozen=True)
class FinetuneConfig:
    """Finetune budget and hyper-parameters, identical for every video.

    out_dim, hidden_dim, bottleneck_dim: DINO head sizes (K prototypes). K=1024 rather than
        DINO's 65536: a video has tens of identities, and the clustering keeps (N, K) outputs.
    teacher_temp, student_temp: softmax temperatures (DINO: 0.04 and 0.1).
    center_momentum: EMA momentum of the teacher-output centre.
    teacher_momentum: start of the cosine EMA schedule of the teacher weights, ending at 1.
        0.99 rather than DINO's 0.996: a finetune lasts 200-1000 steps, and at 0.996 the
        teacher would average over about as many (1 / (1 - m) = 250) and barely move.
    head_steps_per_track, joint_steps_per_track, min_steps, max_steps: steps of the head-only
        and the joint stage = clip(per_track * tracks, min_steps, max_steps).
    batch_pairs: positive pairs per step (each gives two views to student and teacher).
    match_fraction: share of a batch drawn from matched track pairs when there are matches.
    head_lr, adapter_lr: AdamW peak learning rates (linear warm-up, cosine decay per stage).
    head_weight_decay: AdamW decoupled weight decay of the head; none on the adapter, which
        should stay near the identity, where the generic model is.
    warmup_fraction: share of each stage spent warming the learning rate up.
    clip_grad: max global gradient norm (DINO clips at 3).
    checkpoint_every: steps between ``on_checkpoint`` calls (also called when a stage ends).
    eval_batch: rows per forward pass in ``face_embeddings``.
    device: "auto" (CUDA when available), "cpu" or "cuda".
    bf16: bfloat16 autocast for embedding the views on CUDA (ignored on the CPU).
    """

    out_dim: int = 1024
    hidden_dim: int = 1024
    bottleneck_dim: int = 256
    teacher_temp: float = 0.04
    student_temp: float = 0.1
    center_momentum: float = 0.9
    teacher_momentum: float = 0.99
    head_steps_per_track: float = 1.0
    joint_steps_per_track: float = 1.0
    min_steps: int = 100
    max_steps: int = 500
    batch_pairs: int = 64
    match_fraction: float = 0.5
    head_lr: float = 1e-3
    adapter_lr: float = 2e-5
    head_weight_decay: float = 0.04
    warmup_fraction: float = 0.1
    clip_grad: float = 3.0
    checkpoint_every: int = 100
    eval_batch: int = 4096
    device: str = "auto"
    bf16: bool = True

    def __post_init__(self) -> None:
        if self.device not in ("auto", "cpu", "cuda"):
            raise ConfigError(f"FinetuneConfig.device={self.device!r} must be 'auto', 'cpu' or 'cuda'")
        names = ("out_dim", "hidden_dim", "bottleneck_dim", "batch_pairs", "eval_batch", "checkpoint_every")
        for name in names:
            if getattr(self, name) < 1:
                raise ConfigError(f"FinetuneConfig.{name}={getattr(self, name)} must be >= 1")
        if not (self.teacher_temp > 0 and self.student_temp > 0):
            raise ConfigError("FinetuneConfig temperatures must be positive")
        if not (0 <= self.center_momentum < 1 and 0 <= self.teacher_momentum <= 1):
            raise ConfigError("FinetuneConfig.center_momentum must lie in [0, 1), teacher_momentum in [0, 1]")
        if not 0 <= self.match_fraction <= 1:
            raise ConfigError(f"FinetuneConfig.match_fraction={self.match_fraction} must lie in [0, 1]")
        if self.min_steps < 0 or self.max_steps < self.min_steps:
            raise ConfigError("FinetuneConfig needs 0 <= min_steps <= max_steps")

    def stage_steps(self, n_tracks: int) -> tuple[int, int]:
        """(head-only steps, joint steps) for a video with n_tracks tracks."""

        def clip(per_track: float) -> int:
            return int(min(self.max_steps, max(self.min_steps, round(per_track * n_tracks))))

        return clip(self.head_steps_per_track), clip(self.joint_steps_per_track)


class Adapter(nn.Module):
    """The per-title model: a linear map of the generic embedding, the identity at the start.

    Input (B, D) L2-normalised generic embeddings; output (B, D) unnormalised.
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.linear = nn.Linear(dim, dim)
        with torch.no_grad():
            self.linear.weight.copy_(torch.eye(dim))
            self.linear.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x.float())


class DinoHead(nn.Module):
    """DINO projection head: MLP in_dim -> hidden -> hidden -> bottleneck, L2-normalise, then a
    weight-normalised linear layer to out_dim prototypes (norm fixed to 1, as DINO's
    ``norm_last_layer=True``). Input: backbone embeddings (B, in_dim), any scale; they are
    L2-normalised and scaled by sqrt(in_dim) first, so only the identity direction is used and
    the MLP sees unit-variance inputs. Output: logits float32 (B, out_dim)."""

    def __init__(self, in_dim: int, cfg: FinetuneConfig, generator: torch.Generator) -> None:
        super().__init__()
        self.scale = math.sqrt(in_dim)
        self.mlp = nn.Sequential(
            nn.Linear(in_dim, cfg.hidden_dim),
            nn.GELU(),
            nn.Linear(cfg.hidden_dim, cfg.hidden_dim),
            nn.GELU(),
            nn.Linear(cfg.hidden_dim, cfg.bottleneck_dim),
        )
        # weight_norm with g fixed to 1 is a row-normalised weight; storing v alone keeps the
        # state_dict plain and deepcopy-safe.
        self.prototypes = nn.Parameter(torch.empty(cfg.out_dim, cfg.bottleneck_dim))
        with torch.no_grad():
            for m in self.mlp:
                if isinstance(m, nn.Linear):
                    nn.init.trunc_normal_(m.weight, std=0.02, a=-0.04, b=0.04, generator=generator)
                    m.bias.zero_()
            nn.init.trunc_normal_(self.prototypes, std=0.02, a=-0.04, b=0.04, generator=generator)

    def forward(self, emb: torch.Tensor) -> torch.Tensor:
        x = F.normalize(emb.float(), dim=-1) * self.scale
        x = F.normalize(self.mlp(x), dim=-1)
        return F.linear(x, F.normalize(self.prototypes, dim=-1))


def dino_loss(
    student_out: torch.Tensor, teacher_out: torch.Tensor, center: torch.Tensor, temp_s: float, temp_t: float
) -> torch.Tensor:
    """Mean over the batch of -softmax((t - c) / temp_t) . log_softmax(s / temp_s).

    student_out, teacher_out: logits (B, K); center (K,). The teacher side is detached, so
    gradients flow only through the student.
    """
    target = F.softmax((teacher_out.detach().float() - center) / temp_t, dim=-1)
    return -(target * F.log_softmax(student_out.float() / temp_s, dim=-1)).sum(-1).mean()


def pair_loss(
    s_a: torch.Tensor,
    s_b: torch.Tensor,
    t_a: torch.Tensor,
    t_b: torch.Tensor,
    center: torch.Tensor,
    temp_s: float,
    temp_t: float,
) -> torch.Tensor:
    """Symmetrised DINO loss of positive pairs (a, b): the student of each view predicts the
    teacher of the other view, both directions averaged. All inputs (B, K) logits."""
    return 0.5 * (dino_loss(s_b, t_a, center, temp_s, temp_t) + dino_loss(s_a, t_b, center, temp_s, temp_t))


def update_center(center: torch.Tensor, teacher_out: torch.Tensor, momentum: float) -> torch.Tensor:
    """New centre (K,) = momentum * center + (1 - momentum) * batch mean of teacher_out (B, K)."""
    return center * momentum + teacher_out.detach().float().mean(0) * (1.0 - momentum)


@torch.no_grad()
def ema_update(teacher: list[torch.Tensor], student: list[torch.Tensor], momentum: float) -> None:
    """In place: every teacher tensor <- momentum * teacher + (1 - momentum) * student."""
    for t, s in zip(teacher, student, strict=True):
        t.mul_(momentum).add_(s.detach(), alpha=1.0 - momentum)


def teacher_momentum(step: int, total: int, start: float) -> float:
    """DINO's cosine schedule from ``start`` at step 0 to 1 at step ``total``."""
    return 1.0 - (1.0 - start) * (math.cos(math.pi * min(step, total) / max(total, 1)) + 1.0) / 2.0


def _lr_factor(step: int, total: int, warmup_fraction: float) -> float:
    warm = max(1, round(warmup_fraction * total))
    if step < warm:
        return (step + 1) / warm
    return 0.5 * (1.0 + math.cos(math.pi * (step - warm) / max(1, total - warm)))


@dataclass
class FinetuneState:
    """Everything needed to resume a finetune, or to build its models; tensors on the CPU.

    student_head, teacher_head: DinoHead state_dicts. student_adapter, teacher_adapter: Adapter
    state_dicts. center: (K,) teacher centre. optimizer: the current stage's AdamW state_dict.
    generator: RNG state of the pair sampler. step: steps done over both stages; head_steps,
    joint_steps: the planned stage lengths. stage: "head", "joint" or "done". losses: one loss
    per step done.
    """

    student_head: dict[str, torch.Tensor]
    teacher_head: dict[str, torch.Tensor]
    student_adapter: dict[str, torch.Tensor]
    teacher_adapter: dict[str, torch.Tensor]
    center: torch.Tensor
    optimizer: dict | None
    generator: torch.Tensor
    step: int
    head_steps: int
    joint_steps: int
    stage: str
    seed: int
    losses: list[float] = field(default_factory=list)


def resolve_device(cfg: FinetuneConfig) -> torch.device:
    """The device ``cfg.device`` names here: CUDA for "auto" when torch sees one, else the CPU."""
    if cfg.device == "cuda" or (cfg.device == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise ConfigError(
                "FinetuneConfig.device='cuda' but torch sees no CUDA device; use 'auto' or 'cpu'"
            )
        return torch.device("cuda")
    return torch.device("cpu")


class _Models:
    """Student and teacher (adapter + head), built from the embedding size and optional state."""

    def __init__(self, dim: int, cfg: FinetuneConfig, seed: int, device: torch.device,
                 state: FinetuneState | None) -> None:
        init = torch.Generator().manual_seed(seed)
        self.student_head = DinoHead(dim, cfg, init).to(device)
        self.teacher_head = copy.deepcopy(self.student_head)
        self.student_adapter = Adapter(dim).to(device)
        self.teacher_adapter = copy.deepcopy(self.student_adapter)
        for p in [*self.teacher_head.parameters(), *self.teacher_adapter.parameters()]:
            p.requires_grad_(False)
        if state is not None:
            self.student_head.load_state_dict(state.student_head)
            self.teacher_head.load_state_dict(state.teacher_head)
            self.student_adapter.load_state_dict(state.student_adapter)
            self.teacher_adapter.load_state_dict(state.teacher_adapter)


def _sample_pairs(
    offsets: torch.Tensor,
    counts: torch.Tensor,
    tracks: torch.Tensor,
    matches: torch.Tensor,
    cfg: FinetuneConfig,
    gen: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Face rows (into the track-sorted faces) of B positive pairs: same-track pairs, then
    matched pairs."""
    b = cfg.batch_pairs
    n_match = round(b * cfg.match_fraction) if len(matches) else 0
    t = tracks[torch.randint(len(tracks), (b - n_match,), generator=gen)]
    u, w = torch.rand(b - n_match, generator=gen), torch.rand(b - n_match, generator=gen)
    first = (u * counts[t]).long()
    # The second face differs from the first when the track has more than one.
    other = (first + 1 + (w * (counts[t] - 1)).long()) % counts[t]
    a_rows, b_rows = offsets[t] + first, offsets[t] + other
    if n_match:
        m = matches[torch.randint(len(matches), (n_match,), generator=gen)]
        ua, ub = torch.rand(n_match, generator=gen), torch.rand(n_match, generator=gen)
        a_rows = torch.cat([a_rows, offsets[m[:, 0]] + (ua * counts[m[:, 0]]).long()])
        b_rows = torch.cat([b_rows, offsets[m[:, 1]] + (ub * counts[m[:, 1]]).long()])
    return a_rows, b_rows


def _validate(
    views: np.ndarray, track_index: np.ndarray, matches: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    if views.ndim != 3 or len(views) == 0 or views.shape[1] < 1:
        raise InputError(f"finetune expects (N, V, D) view embeddings with N, V >= 1, got {views.shape}")
    track_index = np.asarray(track_index, np.int64)
    if track_index.shape != (len(views),) or track_index.min() < 0:
        raise InputError(
            f"track_index must be (N,)={len(views)} non-negative ints, got shape {track_index.shape}"
        )
    matches = np.asarray(matches, np.int64).reshape(-1, 2)
    present = np.bincount(track_index, minlength=int(track_index.max()) + 1) > 0
    if len(matches) and (matches.min() < 0 or matches.max() >= len(present) or not present[matches].all()):
        raise InputError("matches must be (M, 2) indices of tracks that have faces in track_index")
    return track_index, matches


class _Run:
    """One finetune in progress: the models, the track-sorted view bank on the device, the pair
    sampler's inputs and RNG, the teacher centre (K,), the steps done and their losses."""

    def __init__(self, views: np.ndarray, track_index: np.ndarray, matches: np.ndarray,
                 cfg: FinetuneConfig, seed: int, state: FinetuneState | None) -> None:
        self.cfg, self.seed = cfg, seed
        self.device = resolve_device(cfg)
        self.models = _Models(views.shape[2], cfg, seed, self.device, state)
        order = np.argsort(track_index, kind="stable")
        counts = np.bincount(track_index)
        offsets = np.r_[0, np.cumsum(counts)[:-1]]
        self.bank = torch.from_numpy(np.ascontiguousarray(views[order])).to(self.device)
        self.tracks = torch.from_numpy(np.flatnonzero(counts > 0))
        self.head_steps, self.joint_steps = cfg.stage_steps(len(self.tracks))
        self.total = self.head_steps + self.joint_steps
        if state is None:
            self.center = torch.zeros(cfg.out_dim, device=self.device)
            self.gen = torch.Generator().manual_seed(seed)
            self.step, self.losses = 0, []
        else:
            if (state.head_steps, state.joint_steps, state.seed) != (self.head_steps, self.joint_steps, seed):
                raise ConfigError(
                    "the FinetuneState was made with other inputs, cfg or seed; start without a state"
                )
            self.center = state.center.to(self.device)
            self.gen = torch.Generator()
            self.gen.set_state(state.generator)
            self.step, self.losses = state.step, list(state.losses)
        self.offsets, self.counts = torch.from_numpy(offsets), torch.from_numpy(counts)
        self.matches = torch.from_numpy(matches)

    def snapshot(self, stage: str, optimizer: torch.optim.Optimizer | None) -> FinetuneState:
        """The resumable state now, tensors copied to the CPU."""

        def cpu(module: nn.Module) -> dict[str, torch.Tensor]:
            return {k: v.detach().cpu().clone() for k, v in module.state_dict().items()}

        m = self.models
        return FinetuneState(
            student_head=cpu(m.student_head), teacher_head=cpu(m.teacher_head),
            student_adapter=cpu(m.student_adapter), teacher_adapter=cpu(m.teacher_adapter),
            center=self.center.detach().cpu().clone(),
            optimizer=None if optimizer is None else copy.deepcopy(optimizer.state_dict()),
            generator=self.gen.get_state(), step=self.step, head_steps=self.head_steps,
            joint_steps=self.joint_steps, stage=stage, seed=self.seed, losses=list(self.losses),
        )

    def train_stage(self, stage: str, begin: int, end: int, optimizer_state: dict | None,
                    on_checkpoint: Callable[[FinetuneState], None] | None) -> None:
        """Run steps up to ``end`` of the stage that spans ``begin..end``: ``head`` trains the
        student head, ``joint`` the head and the adapter; ``optimizer_state`` resumes AdamW."""
        cfg, m = self.cfg, self.models
        joint = stage == "joint"
        adapter = list(m.student_adapter.parameters())
        for p in adapter:
            p.requires_grad_(joint)
        groups = [{"params": list(m.student_head.parameters()), "lr": cfg.head_lr,
                   "weight_decay": cfg.head_weight_decay}]
        if joint:
            groups.append({"params": adapter, "lr": cfg.adapter_lr, "weight_decay": 0.0})
        optimizer = torch.optim.AdamW(groups)
        if optimizer_state is not None:
            # A copy: the AdamW steps update its moments in place, and the caller's state stays as given.
            optimizer.load_state_dict(copy.deepcopy(optimizer_state))
        teacher_adapter = list(m.teacher_adapter.parameters()) if joint else []
        ema_teacher = [*m.teacher_head.parameters(), *teacher_adapter]
        ema_student = [*m.student_head.parameters(), *(adapter if joint else [])]
        params = [p for g in groups for p in g["params"]]
        while self.step < end:
            for g, peak in zip(optimizer.param_groups, (cfg.head_lr, cfg.adapter_lr), strict=False):
                g["lr"] = peak * _lr_factor(self.step - begin, end - begin, cfg.warmup_fraction)
            self.train_step(optimizer, params, ema_teacher, ema_student)
            if on_checkpoint is not None and self.step < end and self.step % cfg.checkpoint_every == 0:
                on_checkpoint(self.snapshot(stage, optimizer))
        if on_checkpoint is not None:
            # A stage boundary: the next stage starts a fresh optimizer, so none is saved.
            on_checkpoint(self.snapshot("joint" if not joint else "done", None))

    def train_step(self, optimizer: torch.optim.Optimizer, params: list[torch.Tensor],
                   ema_teacher: list[torch.Tensor], ema_student: list[torch.Tensor]) -> None:
        """One step on a batch of positive pairs, one random view per face: the student learns
        the teacher's distribution, then the teacher and the centre follow by EMA."""
        cfg, m, device = self.cfg, self.models, self.device
        a_rows, b_rows = _sample_pairs(self.offsets, self.counts, self.tracks, self.matches, cfg, self.gen)
        pick = torch.randint(self.bank.shape[1], (2, len(a_rows)), generator=self.gen)
        x = torch.cat([self.bank[a_rows.to(device), pick[0].to(device)],
                       self.bank[b_rows.to(device), pick[1].to(device)]]).float()
        with torch.no_grad():
            t_out = m.teacher_head(m.teacher_adapter(x)).float()
        s_out = m.student_head(m.student_adapter(x)).float()
        n = len(a_rows)
        loss = pair_loss(s_out[:n], s_out[n:], t_out[:n], t_out[n:], self.center, cfg.student_temp,
                         cfg.teacher_temp)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, cfg.clip_grad)
        optimizer.step()
        ema_update(ema_teacher, ema_student, teacher_momentum(self.step, self.total, cfg.teacher_momentum))
        self.center = update_center(self.center, t_out, cfg.center_momentum)
        self.losses.append(loss.item())
        self.step += 1


def finetune(
    views: np.ndarray,
    track_index: np.ndarray,
    matches: np.ndarray,
    cfg: FinetuneConfig,
    seed: int,
    state: FinetuneState | None = None,
    on_checkpoint: Callable[[FinetuneState], None] | None = None,
) -> FinetuneState:
    """Finetune student/teacher on one video's faces; returns the final state.

    views: (N, V, D) generic embeddings of V views of each face (``ViewBank.training_views``);
    each step draws one view per face of a pair. track_index: int64 (N,) track of each face,
    0..T-1. matches: int64 (M, 2) pairs of track indices that coarse matching linked (may be
    empty). Passing a ``state`` saved by ``on_checkpoint`` (same inputs, cfg and seed) continues
    where it stopped and ends with the same weights as an uninterrupted run on the CPU.
    """
    views = np.asarray(views)
    track_index, matches = _validate(views, track_index, matches)
    run = _Run(views, track_index, matches, cfg, seed, state)
    if run.step >= run.total:
        return state if state is not None else run.snapshot("done", None)
    resume = state.optimizer if state is not None else None
    for stage, begin, end in (("head", 0, run.head_steps), ("joint", run.head_steps, run.total)):
        if run.step >= end:
            continue
        run.train_stage(stage, begin, end, resume if state is not None and state.stage == stage else None,
                        on_checkpoint)
        resume = None
    return run.snapshot("done", None)


def face_embeddings(state: FinetuneState | None, embeddings: np.ndarray, cfg: FinetuneConfig) -> np.ndarray:
    """The finetuned model's float32 (..., D) L2-normalised embeddings of generic embeddings
    (..., D), any leading shape.

    ``state`` None is the generic model (the embeddings, re-normalised). Embeddings come from
    the teacher adapter: the EMA teacher is the smoother model, and DINO evaluates with it.
    """
    x = np.asarray(embeddings)
    lead, dim = x.shape[:-1], x.shape[-1]
    flat = x.reshape(-1, dim)
    if state is None:
        out = flat.astype(np.float32)
        out /= np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)
        return out.reshape(*lead, dim)
    adapter = Adapter(dim)
    adapter.load_state_dict(state.teacher_adapter)
    emb = []
    with torch.no_grad():
        for i in range(0, len(flat), cfg.eval_batch):
            rows = torch.from_numpy(np.ascontiguousarray(flat[i:i + cfg.eval_batch])).float()
            emb.append(F.normalize(adapter(rows), dim=-1).numpy())
    return (np.concatenate(emb) if emb else np.zeros((0, dim), np.float32)).reshape(*lead, dim)
