"""VideoClusterNet on one movie: finetune ↔ coarse matching, then parameter-free clustering.

Stage 2 and 3 alternate (:func:`adapt`): coarse matching links tracks whose mean embedding falls
in another track's dense region; the links become positives of a self-supervised finetune; the
finetuned model's embeddings give new matches; repeat until the matches stop changing or
``MatchingConfig.max_rounds``. Stage 4 (:func:`cluster`) scores track quality (SER-FIQ),
sets low outliers aside as ``unknown`` and clusters the rest parameter-free, starting from the
matched groups, on the cosine distance of the finetuned embeddings (or the paper's SSL loss,
``MethodConfig.distance``); docs/method.md gives the measurements behind each departure.

Both stages see a fixed sample of faces per track (:func:`sample_rows`), so cost grows with the
number of tracks, not with their length.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from vcn.backbone import OnnxBackbone, preprocess
from vcn.clustering import ParameterFreeResult, first_appearance, parameter_free
from vcn.constraints import group_pairs
from vcn.errors import ConfigError
from vcn.finetune import FinetuneConfig, FinetuneState, face_outputs, finetune
from vcn.grouping import grow_matches, match_groups, voted_matches
from vcn.matching import MatchingConfig
from vcn.set_distance import CosineDistance, LossDistance, embedding_track_stats, loss_track_stats
from vcn.thresholds import (
    group_spread_floor,
    in_quality_range,
    view_thresholds_embedding,
    view_thresholds_loss,
)
from vcn.track_quality import SerFiqConfig, mad_low_outliers, serfiq_scores, track_quality
from vcn.views import SHOT_VIEWS, ViewConfig, strong_view_blocks, strong_views


@dataclass(frozen=True)
class MethodConfig:
    """The VideoClusterNet stages' configs; fixed across videos, nothing for the user to tune.

    views: the strong views that matching scores; threshold_views: the views whose spread sets
        each group's stage-4 threshold (the strong views plus shot degradations).
    faces_per_track: faces sampled evenly along each track for finetuning, matching, quality and
        clustering. mad_k: tracks whose quality is more than ``mad_k`` robust deviations below
        the median are ``unknown``.
    distance: the stage-4 distance between tracks. ``cosine`` (default): mean pairwise cosine
        distance of the finetuned embeddings; ``loss``: the SSL loss, both directions averaged
        (the paper). Measured in docs/method.md: over four dev sets and two seeds the loss put
        two people in one cluster in 3 of 8 runs, cosine in none.
    spread_floor: lone tracks' thresholds are floored at the median threshold of the matched
        multi-track groups (:func:`vcn.thresholds.group_spread_floor`); off only for the
        ablation.
    floor_in_quality_range: the floor is lent only to lone tracks whose quality is at least
        that of every track in the multi-track groups it was measured on (the default since
        stop 14: on HARD seeds 5 and 7 with seed 0 every wrong floor merge had a lone track
        below that range; docs/method.md change 13 also gives the run it does not fix); off
        only for the ablation.
    floor_pairs_in_range: with ``floor_in_quality_range``, a link that holds only on the floor
        also needs its other side in that range (both clusters made of in-range tracks,
        :func:`vcn.clustering.parameter_free`'s ``lent_trusted``). Off since stop 18: it was the
        default with change 14 because on HARD seed 5 / seed 1 it kept two Katy Perry wide shots
        (lent the floor) from a Jennifer Aniston shot below the range, WCP 0.977 -> 0.993; with
        the voted matching (``match_draws``) that run is pure without it, and it only costs
        right merges (HARD seeds 3, 5 and 7: 1-3 clusters more; docs/method.md changes 14 and 16).
    match_draws: independent draws of the matching views; each draw runs the whole grown
        matching (:func:`vcn.grouping.grow_matches`) and the pairs that ``match_quorum`` of the
        draws make stand (:func:`vcn.grouping.voted_matches`). One draw of views decides by
        chance whether a wide pair of one person matches in the first round, and that pair
        sets how wide a group match may be, so one draw's matches varied threefold (held-out
        HARD seed 9: 11-43 pairs over four seeds); three draws with a majority vote: 27-47
        (``benchmarks.matching_draws``; docs/method.md change 15). 1 is the single draw of
        stops 8-16.
    match_quorum: ``majority`` (default: more than half of the draws) or ``all`` (the meet of
        the draws' groups, measured as an option at stop 12: it drops up to half of a draw's
        right matches, "Agreement over draws of views").
    """

    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    matching: MatchingConfig = field(default_factory=lambda: MatchingConfig(mutual=True))
    serfiq: SerFiqConfig = field(default_factory=SerFiqConfig)
    views: ViewConfig = field(default_factory=ViewConfig)
    threshold_views: ViewConfig = field(default_factory=lambda: SHOT_VIEWS)
    faces_per_track: int = 8
    mad_k: float = 3.0
    distance: str = "cosine"
    spread_floor: bool = True
    floor_in_quality_range: bool = True
    floor_pairs_in_range: bool = False
    match_draws: int = 3
    match_quorum: str = "majority"

    def __post_init__(self) -> None:
        if self.distance not in ("cosine", "loss"):
            raise ConfigError(f"MethodConfig.distance={self.distance!r} must be 'cosine' or 'loss'")
        if self.match_draws < 1:
            raise ConfigError(f"MethodConfig.match_draws={self.match_draws} must be >= 1")
        if self.match_quorum not in ("majority", "all"):
            raise ConfigError(f"MethodConfig.match_quorum={self.match_quorum!r} must be 'majority' or 'all'")

    @property
    def quorum(self) -> int:
        """Draws that must make a pair for it to stand."""
        return self.match_draws if self.match_quorum == "all" else self.match_draws // 2 + 1


def sample_rows(track_index: np.ndarray, per_track: int) -> np.ndarray:
    """Rows (M,) int64 of up to ``per_track`` faces per track, evenly spaced along each track.

    ``track_index`` (N,) int64 in 0..T-1, rows assumed in time order within a track.
    """
    track_index = np.asarray(track_index, np.int64)
    order = np.argsort(track_index, kind="stable")
    counts = np.bincount(track_index)
    starts = np.r_[0, np.cumsum(counts)[:-1]]
    picks = []
    for s, n in zip(starts, counts, strict=True):
        if n:
            picks.append(order[s + np.round(np.linspace(0, n - 1, min(n, per_track))).astype(np.int64)])
    return np.sort(np.concatenate(picks)) if picks else np.zeros(0, np.int64)


def view_embeddings(
    backbone: OnnxBackbone, state: FinetuneState | None, views: np.ndarray, cfg: MethodConfig
) -> np.ndarray:
    """Embeddings (N*V, D) of views (N, V, 112, 112, 3) under the generic or finetuned model."""
    flat = views.reshape(-1, *views.shape[2:])
    if state is not None:
        return face_outputs(backbone, state, flat, cfg.finetune).embeddings
    out = []
    backbone.eval()
    with torch.no_grad():
        for i in range(0, len(flat), cfg.finetune.eval_batch):
            x = preprocess(flat[i:i + cfg.finetune.eval_batch], backbone.input_mean, backbone.input_std)
            out.append(F.normalize(backbone(x).float(), dim=-1).numpy())
    return np.concatenate(out) if out else np.zeros((0, 512), np.float32)


@dataclass
class Checkpoint:
    """Resumable state of :func:`adapt`: the round, its matches, the finetune state, history."""

    round: int
    matches: np.ndarray
    state: FinetuneState | None
    history: list[dict] = field(default_factory=list)
    done: bool = False


# Faces whose threshold views are drawn and embedded at once: 64 x 16 views x 37 KB of pixels.
_VIEW_BLOCK = 64
# Faces whose matching views are drawn and embedded at once (512 x 6 views: 115 MB of pixels).
# A multiple of FinetuneConfig.eval_batch's default, so the forward batches are those of one
# pass over every view and the embeddings do not depend on the block.
_MATCH_BLOCK = 512


def matching_embeddings(
    backbone: OnnxBackbone, state: FinetuneState | None, crops: np.ndarray, cfg: MethodConfig,
    seed: int | tuple[int, int], block: int = _MATCH_BLOCK,
) -> np.ndarray:
    """Embeddings (N*V, D) of ``cfg.views`` views (``strong_views(crops, cfg.views, seed)``,
    face-major) of crops (N, 112, 112, 3) uint8, drawn and embedded ``block`` faces at a time so
    that memory holds one block of views, not all of them (docs/method.md, "Cost")."""
    parts = [view_embeddings(backbone, state, v, cfg)
             for v in strong_view_blocks(crops, cfg.views, seed, block)]
    return np.concatenate(parts) if parts else np.zeros((0, 512), np.float32)


def _pairs(m: np.ndarray) -> set[tuple[int, int]]:
    return {(int(a), int(b)) for a, b in np.asarray(m).reshape(-1, 2)}


def coarse_positives(
    backbone: OnnxBackbone, state: FinetuneState | None, crops: np.ndarray, track_index: np.ndarray,
    cfg: MethodConfig, seed: int, cannot_link: np.ndarray,
) -> tuple[np.ndarray, list[np.ndarray]]:
    """One matching pass of :func:`adapt`: ``(voted, per_draw)`` positive track pairs.

    ``crops`` (N, 112, 112, 3) uint8, ``track_index`` (N,) int64 in 0..T-1, ``cannot_link``
    (P, 2) int64 track pairs. Each of ``cfg.match_draws`` draws of views (draw 0 from ``seed``
    alone, so that one draw is the method of before draws existed; draw ``d`` from ``(seed,
    d)``) runs :func:`vcn.grouping.grow_matches`; ``voted`` (M, 2) int64 are the pairs that
    ``cfg.quorum`` of them make (:func:`vcn.grouping.voted_matches`), ``per_draw`` each draw's.
    Views are drawn again for each pass rather than kept: drawing costs far less than
    embedding, and keeping them would hold 1.8 MB per track and draw.
    """
    v_index = np.repeat(track_index, cfg.views.n_views)
    n_tracks = int(track_index.max()) + 1 if len(track_index) else 0
    found, means = [], None
    for d in range(cfg.match_draws):  # one draw's embeddings alive at a time
        emb = matching_embeddings(backbone, state, crops, cfg, seed if d == 0 else (seed, d))
        found.append(grow_matches(emb, v_index, cfg.matching, cannot_link))
        if means is None:  # the first draw's track means order the voted pairs
            means = np.zeros((n_tracks, emb.shape[1]))
            np.add.at(means, v_index, emb)
            means /= np.maximum(np.linalg.norm(means, axis=1, keepdims=True), 1e-12)
    return voted_matches(found, n_tracks, cfg.quorum, means, cannot_link), found


def adapt(
    backbone: OnnxBackbone,
    crops: np.ndarray,
    track_index: np.ndarray,
    cfg: MethodConfig,
    seed: int,
    resume: Checkpoint | None = None,
    on_checkpoint: Callable[[Checkpoint], None] | None = None,
    cannot_link: np.ndarray | None = None,
) -> Checkpoint:
    """Alternate coarse matching and finetuning; return the final checkpoint.

    ``crops`` (N, 112, 112, 3) uint8 BGR sampled faces, ``track_index`` (N,) int64 in 0..T-1.
    ``cannot_link`` (P, 2) int64 pairs of tracks seen on one frame (from all faces, see
    :func:`vcn.constraints.cooccurring_pairs`): a match between them is dropped, since they are
    two people (on the pedestrians clip all 17 wrong matches were such pairs), and so is a match
    that would put two of them in one group through other matches (closest matches first).
    Matching runs on the embeddings of strong views of every face (the clean crop included), so
    that near-duplicate tracks still get a spread to match against; it is mutual (both tracks'
    regions must hold the other's mean) because one-sided matches link different people on the
    real clips, and it grows over groups of matched tracks (:func:`vcn.grouping.grow_matches`).
    It runs on ``cfg.match_draws`` independent draws of views and keeps the pairs that
    ``cfg.quorum`` of them make (:func:`vcn.grouping.voted_matches`; a majority of three by
    default). Each round finetunes afresh from the generic model with the round's positives.
    """
    cannot = np.zeros((0, 2), np.int64) if cannot_link is None else cannot_link

    def match(state: FinetuneState | None) -> np.ndarray:
        return coarse_positives(backbone, state, crops, track_index, cfg, seed, cannot)[0]

    if resume is None:
        matches = match(None)
        resume = Checkpoint(round=0, matches=matches, state=None)
    ck = resume
    while not ck.done:
        def save(s: FinetuneState, ck: Checkpoint = ck) -> None:
            if on_checkpoint is not None:
                on_checkpoint(Checkpoint(ck.round, ck.matches, s, list(ck.history)))

        state = finetune(backbone, crops, track_index, ck.matches, cfg.finetune, seed, state=ck.state,
                         on_checkpoint=save)
        new = match(state)
        history = [*ck.history, {
            "round": ck.round, "matches": len(ck.matches), "next_matches": len(new),
            "steps": state.step, "final_loss": float(np.mean(state.losses[-20:])) if state.losses else None,
        }]
        stable = _pairs(new) == _pairs(ck.matches)
        last = stable or ck.round + 1 >= cfg.matching.max_rounds
        if last:
            ck = Checkpoint(ck.round, ck.matches, state, history, done=True)
        else:
            ck = Checkpoint(ck.round + 1, new, None, history)
        if on_checkpoint is not None:
            on_checkpoint(ck)
    return ck


@dataclass
class Clustering:
    """Outcome of :func:`cluster`: ``labels`` (T,) int64 (-1 = unknown), ``quality`` (T,)
    float32 SER-FIQ medians, ``unknown`` (T,) bool, ``thresholds`` (T,) the view threshold of
    the matched group each track started in, after the cross-shot floor (NaN for unknown
    tracks), the merge rounds, how many lone tracks that floor lifted (``lifted``) and how many
    it would have lifted but for their quality (``held``)."""

    labels: np.ndarray
    quality: np.ndarray
    unknown: np.ndarray
    thresholds: np.ndarray
    result: ParameterFreeResult | None
    lifted: int = 0
    held: int = 0


def _threshold_views(
    backbone: OnnxBackbone, state: FinetuneState, crops: np.ndarray, rows: np.ndarray,
    cfg: MethodConfig, seed: int,
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """Outputs of ``cfg.threshold_views`` views of ``crops[rows]``, block by block.

    Returns embeddings (R, V, 512) and, for the loss distance, teacher probabilities and student
    log-probabilities (R, V, K) (else None). Views are drawn for every crop, kept or not, so a
    face's views do not depend on which tracks the quality filter set aside.
    """
    keep = np.zeros(len(crops), bool)
    keep[rows] = True
    n_views = cfg.threshold_views.n_views
    emb, probs, logprobs = [], [], []
    for block, lo in enumerate(range(0, len(crops), _VIEW_BLOCK)):
        sel = keep[lo:lo + _VIEW_BLOCK]
        if not sel.any():
            continue
        views = strong_views(crops[lo:lo + _VIEW_BLOCK], cfg.threshold_views, (seed, block))[sel]
        out = face_outputs(backbone, state, views.reshape(-1, *views.shape[2:]), cfg.finetune)
        emb.append(out.embeddings.reshape(len(views), n_views, -1))
        if cfg.distance == "loss":
            probs.append(out.teacher_probs.reshape(len(views), n_views, -1))
            logprobs.append(out.student_logprobs.reshape(len(views), n_views, -1))
    if cfg.distance != "loss":
        return np.concatenate(emb), None, None
    return np.concatenate(emb), np.concatenate(probs), np.concatenate(logprobs)


def cluster(
    backbone: OnnxBackbone,
    state: FinetuneState,
    crops: np.ndarray,
    track_index: np.ndarray,
    cfg: MethodConfig,
    seed: int,
    cannot_link: np.ndarray | None = None,
    matches: np.ndarray | None = None,
) -> Clustering:
    """Quality filter and parameter-free clustering under the finetuned model.

    ``crops``, ``track_index`` as in :func:`adapt`; ``cannot_link`` (P, 2) int64 pairs of
    co-occurring tracks, which never end in one cluster; ``matches`` (M, 2) int64 track pairs
    of the last coarse matching (``Checkpoint.matches``). Clustering starts from the groups the
    matches made (tracks the finetune already learnt as one person) rather than from single
    tracks; each group's threshold is the mean distance between ``cfg.threshold_views`` views of
    its faces, so a group that spans shots brings its cross-shot spread to the merge test, and a
    lone track's threshold is floored at the median of those groups' (``cfg.spread_floor``)
    when its quality lies within that of the groups' tracks (``cfg.floor_in_quality_range``);
    a merge that only the floor allows also needs the other side within that range
    (``cfg.floor_pairs_in_range``). ``cfg.distance`` picks cosine (default) or the paper's loss.
    The returned thresholds are the floored ones.
    """
    n_tracks = int(track_index.max()) + 1 if len(track_index) else 0
    quality = track_quality(serfiq_scores(backbone, crops, cfg.serfiq, seed), track_index)
    unknown = mad_low_outliers(np.nan_to_num(quality, nan=-np.inf), cfg.mad_k) | ~np.isfinite(quality)
    labels = np.full(n_tracks, -1, np.int64)
    keep_tracks = np.flatnonzero(~unknown)
    if len(keep_tracks) == 0:
        return Clustering(labels, quality, unknown, np.full(n_tracks, np.nan), None)
    remap = np.full(n_tracks, -1, np.int64)
    remap[keep_tracks] = np.arange(len(keep_tracks))

    def kept_pairs(pairs: np.ndarray | None) -> np.ndarray:
        sub = remap[np.asarray(pairs if pairs is not None else [], np.int64).reshape(-1, 2)]
        return sub[(sub >= 0).all(axis=1)]

    group = match_groups(kept_pairs(matches), len(keep_tracks))
    rows = np.flatnonzero(remap[track_index] >= 0)
    unit = group[remap[track_index[rows]]]
    emb, probs, logprobs = _threshold_views(backbone, state, crops, rows, cfg, seed + 1)
    # Distances between groups use the clean crops (view 0); thresholds use all views.
    if cfg.distance == "loss":
        thresholds = view_thresholds_loss(probs, logprobs, unit)
        stats = loss_track_stats(probs[:, 0], logprobs[:, 0], unit)
        model = LossDistance()
    else:
        thresholds = view_thresholds_embedding(emb, unit, "cosine")
        stats = embedding_track_stats(emb[:, 0], unit, "cosine")
        model = CosineDistance()
    lifted = held = 0
    lent: dict[str, np.ndarray] = {}
    if cfg.spread_floor:
        sizes = np.bincount(group)
        ungated = group_spread_floor(thresholds, sizes)
        floored = ungated
        if cfg.floor_in_quality_range:
            # A group is as reliable as its weakest track: the floor was measured across it.
            group_quality = np.full(len(sizes), np.inf)
            np.minimum.at(group_quality, group, quality[keep_tracks])
            trusted = in_quality_range(thresholds, sizes, group_quality)
            floored = np.where(trusted, ungated, thresholds)
            if cfg.floor_pairs_in_range:
                # The floor only links pairs that are both in range (change 14), so it is
                # passed beside the tracks' own thresholds rather than in place of them.
                lent = {"lent_thresholds": floored, "lent_trusted": trusted}
        lifted = int(np.sum(floored > np.nan_to_num(thresholds, nan=-np.inf)))
        held = int(np.sum(ungated > np.nan_to_num(floored, nan=-np.inf)))
        if not lent:
            thresholds = floored
    result = parameter_free(stats, model, thresholds, group_pairs(kept_pairs(cannot_link), group), **lent)
    if lent:
        thresholds = lent["lent_thresholds"]
    labels[keep_tracks] = first_appearance(result.labels[group])
    full_thr = np.full(n_tracks, np.nan)
    full_thr[keep_tracks] = thresholds[group]
    return Clustering(labels, quality, unknown, full_thr, result, lifted, held)
