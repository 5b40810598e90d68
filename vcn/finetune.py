"""Per-video self-supervised finetune of the face recognizer (DINO with positives only).

VideoClusterNet adapts the generic face model to one video without labels: a student and a
teacher (backbone + DINO projection head) see two views of a positive pair, two faces of one
track or faces of two tracks that coarse matching linked, and the student learns to predict the
teacher's centred, sharpened distribution over K prototypes. There are no negatives; centring
and sharpening keep the outputs from collapsing. The teacher is an EMA of the student.

CPU cost is what shapes the loop. The ArcFace BatchNorms are folded into its convolutions, so
only the last layers are finetuned (``FinetuneConfig.trainable_layers``) and the frozen trunk
before them is run once per face and view, before training, on at most ``faces_per_track`` faces
of each track. Every step then runs only the small tail and the heads. Budgets (steps, batch,
LRs) are fixed functions of the number of tracks, never tuned per video.
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

from vcn.augment import AugmentConfig, augment
from vcn.backbone import OnnxBackbone, preprocess
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
    faces_per_track: faces per track used for training, evenly spaced along the track.
    cached_views: views per face whose trunk features are precomputed: view 0 is the clean
        crop, the others are augmented (flip, roll, colour temperature) with ``augment``.
    head_lr, backbone_lr: AdamW peak learning rates (linear warm-up, cosine decay per stage).
    head_weight_decay, backbone_weight_decay: AdamW decoupled weight decay; none on the
        pretrained backbone, whose weights should stay near where ArcFace training left them.
    warmup_fraction: share of each stage spent warming the learning rate up.
    clip_grad: max global gradient norm (DINO clips at 3).
    trainable_layers: Conv/Gemm layers counted from the output that the joint stage trains;
        the backbone is split at the latest single-tensor cut before them (see
        ``OnnxBackbone.split_for_tail``). 6 on w600k_mbf: the last residual block at 7x7, the
        conv_sep/1x1 convolutions, the fc layer and the output BatchNorm (1.9 M of 3.4 M weights).
    checkpoint_every: steps between ``on_checkpoint`` calls (also called when a stage ends).
    trunk_batch, eval_batch: images per forward pass when caching the trunk / in ``face_outputs``.
    device: "auto" (CUDA when available), "cpu" or "cuda".
    bf16: bfloat16 autocast for the forward passes on CUDA (ignored on CPU, where it is slower).
    augment: the augmentation strengths.
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
    faces_per_track: int = 6
    cached_views: int = 2
    head_lr: float = 1e-3
    backbone_lr: float = 2e-5
    head_weight_decay: float = 0.04
    backbone_weight_decay: float = 0.0
    warmup_fraction: float = 0.1
    clip_grad: float = 3.0
    trainable_layers: int = 6
    checkpoint_every: int = 100
    trunk_batch: int = 32
    eval_batch: int = 32
    device: str = "auto"
    bf16: bool = True
    augment: AugmentConfig = field(default_factory=AugmentConfig)

    def __post_init__(self) -> None:
        if self.device not in ("auto", "cpu", "cuda"):
            raise ConfigError(f"FinetuneConfig.device={self.device!r} must be 'auto', 'cpu' or 'cuda'")
        for name in (
            "out_dim",
            "hidden_dim",
            "bottleneck_dim",
            "batch_pairs",
            "faces_per_track",
            "cached_views",
            "trunk_batch",
            "eval_batch",
            "checkpoint_every",
        ):
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

    student_head, teacher_head: DinoHead state_dicts. student_tail, teacher_tail: the trainable
    backbone parameters (``named_parameters`` names) after ``cut``; the rest of the backbone is
    the unchanged ONNX model. center: (K,) teacher centre. optimizer: the current stage's AdamW
    state_dict. generator: RNG state of the pair sampler. step: steps done over both stages;
    head_steps, joint_steps: the planned stage lengths. stage: "head", "joint" or "done".
    losses: one loss per step done.
    """

    student_head: dict[str, torch.Tensor]
    teacher_head: dict[str, torch.Tensor]
    student_tail: dict[str, torch.Tensor]
    teacher_tail: dict[str, torch.Tensor]
    center: torch.Tensor
    optimizer: dict | None
    generator: torch.Tensor
    step: int
    head_steps: int
    joint_steps: int
    stage: str
    cut: str
    seed: int
    losses: list[float] = field(default_factory=list)


@dataclass(frozen=True)
class FaceOutputs:
    """Per-face outputs of a finetuned model, rows aligned with the crops.

    embeddings: float32 (N, 512) L2-normalised, from the teacher backbone. teacher_probs:
    float32 (N, K) softmax((t - c) / teacher_temp). student_logprobs: float32 (N, K)
    log_softmax(s / student_temp). With several views each is the mean over the views
    (embeddings re-normalised).
    """

    embeddings: np.ndarray
    teacher_probs: np.ndarray
    student_logprobs: np.ndarray


@dataclass(frozen=True)
class FaceViews:
    """Per-view outputs, rows aligned with the crops, view 0 the clean crop.

    embeddings: float32 (N, V, 512) L2-normalised (teacher backbone). teacher_probs: float32
    (N, V, K). student_logprobs: float32 (N, V, K).
    """

    embeddings: np.ndarray
    teacher_probs: np.ndarray
    student_logprobs: np.ndarray


def resolve_device(cfg: FinetuneConfig) -> torch.device:
    """The device ``cfg.device`` names here: CUDA for "auto" when torch sees one, else the CPU."""
    if cfg.device == "cuda" or (cfg.device == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise ConfigError(
                "FinetuneConfig.device='cuda' but torch sees no CUDA device; use 'auto' or 'cpu'"
            )
        return torch.device("cuda")
    return torch.device("cpu")


def _autocast(cfg: FinetuneConfig, device: torch.device):
    return torch.autocast("cuda", dtype=torch.bfloat16, enabled=cfg.bf16 and device.type == "cuda")


def _check_backbone(backbone: nn.Module) -> OnnxBackbone:
    if not isinstance(backbone, OnnxBackbone):
        raise ConfigError(
            "finetune needs the module from vcn.backbone.load_backbone (it splits the graph "
            f"into a frozen trunk and a trainable tail), got {type(backbone).__name__}"
        )
    return backbone


class _Models:
    """Student and teacher (backbone copy + head), built from a backbone and optional state."""

    def __init__(
        self,
        backbone: OnnxBackbone,
        cfg: FinetuneConfig,
        seed: int,
        device: torch.device,
        state: FinetuneState | None,
    ) -> None:
        self.cut = backbone.split_for_tail(cfg.trainable_layers) if state is None else state.cut
        self.tail_names = backbone.parameter_names_after(self.cut)
        self.student = copy.deepcopy(backbone).to(device).eval()
        self.teacher = copy.deepcopy(backbone).to(device).eval()
        for bb in (self.student, self.teacher):
            for p in bb.parameters():
                p.requires_grad_(False)
        init = torch.Generator().manual_seed(seed)
        dim = self._out_dim(backbone)
        self.student_head = DinoHead(dim, cfg, init).to(device)
        self.teacher_head = copy.deepcopy(self.student_head)
        for p in self.teacher_head.parameters():
            p.requires_grad_(False)
        if state is not None:
            if set(state.student_tail) != set(self.tail_names) or set(state.teacher_tail) != set(
                self.tail_names
            ):
                raise ConfigError(
                    "the FinetuneState's backbone weights do not match this backbone's tail "
                    f"after {self.cut!r}; pass the backbone the state was trained from"
                )
            self.student_head.load_state_dict(state.student_head)
            self.teacher_head.load_state_dict(state.teacher_head)
            self.student.load_state_dict(state.student_tail, strict=False)
            self.teacher.load_state_dict(state.teacher_tail, strict=False)

    @staticmethod
    def _out_dim(backbone: OnnxBackbone) -> int:
        with torch.no_grad():
            p = next(backbone.parameters())
            return int(backbone(torch.zeros(1, 3, 112, 112, device=p.device, dtype=p.dtype)).shape[-1])

    def tail_params(self, bb: OnnxBackbone) -> list[torch.Tensor]:
        named = dict(bb.named_parameters())
        return [named[n] for n in self.tail_names]

    def tails(self) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        s, t = dict(self.student.named_parameters()), dict(self.teacher.named_parameters())
        return (
            {n: s[n].detach().cpu().clone() for n in self.tail_names},
            {n: t[n].detach().cpu().clone() for n in self.tail_names},
        )


def _select_faces(track_index: np.ndarray, per_track: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Up to per_track faces of each track, evenly spaced in input order.

    Returns (face rows (S,), offsets (T,), counts (T,)) with each track's rows contiguous.
    """
    n_tracks = int(track_index.max()) + 1
    rows, offsets, counts = [], np.zeros(n_tracks, np.int64), np.zeros(n_tracks, np.int64)
    order = np.argsort(track_index, kind="stable")
    bounds = np.searchsorted(track_index[order], np.arange(n_tracks + 1))
    total = 0
    for t in range(n_tracks):
        members = order[bounds[t] : bounds[t + 1]]
        if len(members) > per_track:
            members = members[np.round(np.linspace(0, len(members) - 1, per_track)).astype(np.int64)]
        offsets[t], counts[t] = total, len(members)
        total += len(members)
        rows.append(members)
    return np.concatenate(rows), offsets, counts


def _feature_cache(
    student: OnnxBackbone,
    crops: np.ndarray,
    rows: np.ndarray,
    cut: str,
    cfg: FinetuneConfig,
    seed: int,
    device: torch.device,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Trunk features (views, S, ...) float16 and frozen-model embeddings (views, S, D) float32,
    on device, of the selected crops; view 0 is the clean crop."""
    gen = torch.Generator().manual_seed(seed + 1)
    aug = AugmentConfig(
        **{**cfg.augment.__dict__, "input_mean": student.input_mean, "input_std": student.input_std}
    )
    trunk, emb = [], []
    for v in range(cfg.cached_views):
        t_parts, e_parts = [], []
        for i in range(0, len(rows), cfg.trunk_batch):
            x = preprocess(crops[rows[i : i + cfg.trunk_batch]], student.input_mean, student.input_std)
            if v > 0:
                x = augment(x, aug, gen)
            with torch.no_grad(), _autocast(cfg, device):
                h = student.run(x.to(device), stop=cut).to(torch.float16)
                # From the rounded features, so that the joint stage starts where the head left.
                e_parts.append(student.run(h.float(), start=cut).float())
                t_parts.append(h)
        trunk.append(torch.cat(t_parts))
        emb.append(torch.cat(e_parts))
    return torch.stack(trunk), torch.stack(emb)


def _sample_pairs(
    offsets: torch.Tensor,
    counts: torch.Tensor,
    tracks: torch.Tensor,
    matches: torch.Tensor,
    cfg: FinetuneConfig,
    gen: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows (into the selected faces) of B positive pairs: same-track pairs, then matched pairs."""
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
    crops: np.ndarray, track_index: np.ndarray, matches: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    if crops.ndim != 4 or crops.shape[1:] != (112, 112, 3) or crops.dtype != np.uint8:
        raise InputError(
            f"finetune expects uint8 (N, 112, 112, 3) aligned crops, got {crops.dtype} {crops.shape}"
        )
    track_index = np.asarray(track_index, np.int64)
    if track_index.shape != (len(crops),) or len(crops) == 0 or track_index.min() < 0:
        raise InputError(
            f"track_index must be (N,)={len(crops)} non-negative ints, got shape {track_index.shape}"
        )
    matches = np.asarray(matches, np.int64).reshape(-1, 2)
    present = np.bincount(track_index, minlength=int(track_index.max()) + 1) > 0
    if len(matches) and (matches.min() < 0 or matches.max() >= len(present) or not present[matches].all()):
        raise InputError("matches must be (M, 2) indices of tracks that have faces in track_index")
    return track_index, matches


def finetune(
    backbone: nn.Module,
    crops: np.ndarray,
    track_index: np.ndarray,
    matches: np.ndarray,
    cfg: FinetuneConfig,
    seed: int,
    state: FinetuneState | None = None,
    on_checkpoint: Callable[[FinetuneState], None] | None = None,
) -> FinetuneState:
    """Finetune student/teacher on one video's faces; returns the final state.

    backbone: from ``load_backbone`` (not modified). crops: uint8 (N, 112, 112, 3) BGR aligned
    faces. track_index: int64 (N,) track of each crop, 0..T-1. matches: int64 (M, 2) pairs of
    track indices that coarse matching linked (may be empty). Passing a ``state`` saved by
    ``on_checkpoint`` (same inputs, cfg and seed) continues where it stopped and ends with the
    same weights as an uninterrupted run on the CPU.
    """
    bb = _check_backbone(backbone)
    track_index, matches = _validate(crops, track_index, matches)
    device = resolve_device(cfg)
    models = _Models(bb, cfg, seed, device, state)
    rows, offsets, counts = _select_faces(track_index, cfg.faces_per_track)
    tracks = torch.from_numpy(np.flatnonzero(counts > 0))
    head_steps, joint_steps = cfg.stage_steps(len(tracks))
    total = head_steps + joint_steps
    if state is None:
        center = torch.zeros(cfg.out_dim, device=device)
        gen = torch.Generator().manual_seed(seed)
        step, losses, opt_state = 0, [], None
    else:
        if (state.head_steps, state.joint_steps, state.seed) != (head_steps, joint_steps, seed):
            raise ConfigError(
                "the FinetuneState was made with other inputs, cfg or seed; start without a state"
            )
        center = state.center.to(device)
        gen = torch.Generator()
        gen.set_state(state.generator)
        step, losses, opt_state = state.step, list(state.losses), state.optimizer
    offsets_t, counts_t = torch.from_numpy(offsets), torch.from_numpy(counts)
    matches_t = torch.from_numpy(matches)

    def snapshot(stage: str, optimizer: torch.optim.Optimizer | None) -> FinetuneState:
        s_tail, t_tail = models.tails()
        return FinetuneState(
            student_head={k: v.detach().cpu().clone() for k, v in models.student_head.state_dict().items()},
            teacher_head={k: v.detach().cpu().clone() for k, v in models.teacher_head.state_dict().items()},
            student_tail=s_tail,
            teacher_tail=t_tail,
            center=center.detach().cpu().clone(),
            optimizer=None if optimizer is None else copy.deepcopy(optimizer.state_dict()),
            generator=gen.get_state(),
            step=step,
            head_steps=head_steps,
            joint_steps=joint_steps,
            stage=stage,
            cut=models.cut,
            seed=seed,
            losses=list(losses),
        )

    if step >= total:
        return state if state is not None else snapshot("done", None)
    # Trunk features for the joint stage; the head stage trains on the frozen model's
    # embeddings of the same views, so its steps cost only the heads.
    cache, frozen_emb = _feature_cache(models.student, crops, rows, models.cut, cfg, seed, device)
    optimizer: torch.optim.Optimizer | None = None
    for stage, begin, end in (("head", 0, head_steps), ("joint", head_steps, total)):
        if step >= end:
            continue
        joint = stage == "joint"
        s_tail = models.tail_params(models.student)
        for p in s_tail:
            p.requires_grad_(joint)
        groups = [
            {
                "params": list(models.student_head.parameters()),
                "lr": cfg.head_lr,
                "weight_decay": cfg.head_weight_decay,
            }
        ]
        if joint:
            groups.append(
                {"params": s_tail, "lr": cfg.backbone_lr, "weight_decay": cfg.backbone_weight_decay}
            )
        optimizer = torch.optim.AdamW(groups)
        if opt_state is not None and state is not None and state.stage == stage:
            # A copy: the AdamW steps update its moments in place, and the caller's state stays as given.
            optimizer.load_state_dict(copy.deepcopy(opt_state))
        ema_teacher = list(models.teacher_head.parameters()) + (
            models.tail_params(models.teacher) if joint else []
        )
        ema_student = list(models.student_head.parameters()) + (s_tail if joint else [])
        while step < end:
            for g, peak in zip(optimizer.param_groups, (cfg.head_lr, cfg.backbone_lr), strict=False):
                g["lr"] = peak * _lr_factor(step - begin, end - begin, cfg.warmup_fraction)
            a_rows, b_rows = _sample_pairs(offsets_t, counts_t, tracks, matches_t, cfg, gen)
            views = torch.randint(cfg.cached_views, (2, len(a_rows)), generator=gen)
            a_idx, b_idx = (views[0].to(device), a_rows.to(device)), (views[1].to(device), b_rows.to(device))
            with _autocast(cfg, device):
                if joint:
                    x = torch.cat([cache[a_idx], cache[b_idx]]).float()
                    with torch.no_grad():
                        t_emb = models.teacher.run(x, start=models.cut)
                    s_emb = models.student.run(x, start=models.cut)
                else:
                    t_emb = s_emb = torch.cat([frozen_emb[a_idx], frozen_emb[b_idx]])
                with torch.no_grad():
                    t_out = models.teacher_head(t_emb).float()
                s_out = models.student_head(s_emb).float()
            n = len(a_rows)
            loss = pair_loss(
                s_out[:n], s_out[n:], t_out[:n], t_out[n:], center, cfg.student_temp, cfg.teacher_temp
            )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_([p for g in groups for p in g["params"]], cfg.clip_grad)
            optimizer.step()
            ema_update(ema_teacher, ema_student, teacher_momentum(step, total, cfg.teacher_momentum))
            center = update_center(center, t_out, cfg.center_momentum)
            losses.append(loss.item())
            step += 1
            if on_checkpoint is not None and step < end and step % cfg.checkpoint_every == 0:
                on_checkpoint(snapshot(stage, optimizer))
        opt_state = None
        if on_checkpoint is not None:
            # A stage boundary: the next stage starts a fresh optimizer, so none is saved.
            on_checkpoint(snapshot("joint" if not joint else "done", None))
    return snapshot("done", None)


def view_outputs(
    backbone: nn.Module,
    state: FinetuneState,
    crops: np.ndarray,
    cfg: FinetuneConfig,
    views: int = 2,
    seed: int = 0,
) -> FaceViews:
    """Per-view outputs of every crop under a finetuned state, for within-track thresholds.

    crops: uint8 (N, 112, 112, 3) BGR. View 0 is the clean crop, views 1..V-1 are augmented
    copies (``cfg.augment``, generator seeded with ``seed``). Returns (N, V, .) arrays that feed
    ``vcn.thresholds.view_thresholds_loss`` / ``view_thresholds_embedding`` directly. Runs
    batched, without gradients, in eval mode; the trunk runs once per view, shared by teacher
    and student.
    """
    if views < 1:
        raise ConfigError(f"views={views} must be >= 1")
    bb = _check_backbone(backbone)
    crops = np.asarray(crops)
    if crops.ndim != 4 or crops.shape[1:] != (112, 112, 3) or crops.dtype != np.uint8:
        raise InputError(f"expected uint8 (N, 112, 112, 3) aligned crops, got {crops.dtype} {crops.shape}")
    device = resolve_device(cfg)
    models = _Models(bb, cfg, state.seed, device, state)
    center = state.center.to(device)
    aug = AugmentConfig(**{**cfg.augment.__dict__, "input_mean": bb.input_mean, "input_std": bb.input_std})
    gen = torch.Generator().manual_seed(seed)
    out: list[list[list[np.ndarray]]] = [[], [], []]
    for v in range(views):
        parts: list[list[np.ndarray]] = [[], [], []]
        for i in range(0, len(crops), cfg.eval_batch):
            x = preprocess(crops[i : i + cfg.eval_batch], bb.input_mean, bb.input_std)
            if v > 0:
                x = augment(x, aug, gen)
            with torch.no_grad(), _autocast(cfg, device):
                trunk = models.teacher.run(x.to(device), stop=models.cut)
                t_emb = models.teacher.run(trunk, start=models.cut).float()
                s_emb = models.student.run(trunk, start=models.cut).float()
                t_log = models.teacher_head(t_emb).float()
                s_log = models.student_head(s_emb).float()
            parts[0].append(F.normalize(t_emb, dim=-1).cpu().numpy())
            parts[1].append(F.softmax((t_log - center) / cfg.teacher_temp, dim=-1).cpu().numpy())
            parts[2].append(F.log_softmax(s_log / cfg.student_temp, dim=-1).cpu().numpy())
        for k in range(3):
            out[k].append(np.concatenate(parts[k]) if parts[k] else np.zeros((0, 0), np.float32))
    emb, probs, logprobs = (np.stack(o, axis=1).astype(np.float32) for o in out)
    return FaceViews(emb, probs, logprobs)


def face_outputs(
    backbone: nn.Module,
    state: FinetuneState,
    crops: np.ndarray,
    cfg: FinetuneConfig,
    views: int = 1,
    seed: int = 0,
) -> FaceOutputs:
    """Embeddings and DINO distributions of every crop under a finetuned state.

    crops: uint8 (N, 112, 112, 3) BGR. Embeddings come from the teacher backbone: the EMA
    teacher is the smoother model, and DINO evaluates with it. views=1 uses the clean crops;
    views=V > 1 adds V-1 augmented copies (as ``view_outputs``) and averages probabilities,
    log-probabilities and embeddings (re-normalised) over the V views, so that
    -teacher_probs[a] . student_logprobs[b] is the mean loss over pairs of views.
    """
    per_view = view_outputs(backbone, state, crops, cfg, views, seed)
    emb = per_view.embeddings.mean(1)
    emb /= np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
    return FaceOutputs(
        emb.astype(np.float32),
        per_view.teacher_probs.mean(1, dtype=np.float64).astype(np.float32),
        per_view.student_logprobs.mean(1, dtype=np.float64).astype(np.float32),
    )
