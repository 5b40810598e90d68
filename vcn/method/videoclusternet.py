"""VideoClusterNet on one movie: finetune ↔ coarse matching, then parameter-free clustering.

Stage 2 and 3 alternate (:func:`adapt`): coarse matching links tracks whose mean embedding falls
in another track's dense region; the links become positives of a self-supervised finetune; the
finetuned model's embeddings give new matches; repeat until the matches stop changing or
``MatchingConfig.max_rounds``. Stage 4 (:func:`cluster`) scores track quality (SER-FIQ),
sets low outliers aside as ``unknown`` and clusters the rest parameter-free, starting from the
matched groups, on the cosine distance of the finetuned embeddings; docs/method.md gives the
measurements behind each departure.

Both stages see a fixed sample of faces per track (:func:`vcn.method.matching.sample_rows`), so cost
grows with the number of tracks, not with their length.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from vcn.errors import ConfigError
from vcn.faces.backbone import OnnxBackbone
from vcn.faces.embedding import EmbeddingConfig, FaceEmbedder
from vcn.method.clustering import ParameterFreeResult, first_appearance, parameter_free
from vcn.method.constraints import group_pairs
from vcn.method.finetune import FinetuneConfig, FinetuneState, face_embeddings, finetune, resolve_device
from vcn.method.grouping import grow_matches, match_groups, voted_matches
from vcn.method.linking import attach_tracks, link_fragments
from vcn.method.matching import MatchingConfig, index_sums, mean_directions, unit_rows
from vcn.method.set_distance import CosineDistance, embedding_track_stats
from vcn.method.thresholds import group_spread_floor, in_quality_range, view_thresholds_embedding
from vcn.method.track_quality import SerFiqConfig, dropout_point, mad_low_outliers, track_quality
from vcn.method.view_bank import ViewBank, build_view_bank, embed_crops, embed_crops_with_features
from vcn.method.views import SHOT_VIEWS, ViewConfig


@dataclass(frozen=True)
class MethodConfig:
    """The VideoClusterNet stages' configs; fixed across videos, nothing for the user to tune.

    views: the strong views that matching scores; threshold_views: the views whose spread sets
        each group's stage-4 threshold (the strong views plus shot degradations).
    faces_per_track: faces sampled evenly along each track for finetuning, matching, quality and
        clustering. mad_k: tracks whose quality is more than ``mad_k`` robust deviations below
        the median are ``unknown``.
    match_draws: independent draws of the matching views; each draw runs the whole grown
        matching (:func:`vcn.method.grouping.grow_matches`) and the pairs that a majority of the draws
        make stand (:func:`vcn.method.grouping.voted_matches`): one draw decides by chance whether a
        wide pair of one person matches (docs/method.md, departure 1). 1 is a single draw.
    """

    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    matching: MatchingConfig = field(default_factory=lambda: MatchingConfig(mutual=True))
    serfiq: SerFiqConfig = field(default_factory=SerFiqConfig)
    views: ViewConfig = field(default_factory=ViewConfig)
    threshold_views: ViewConfig = field(default_factory=lambda: SHOT_VIEWS)
    faces_per_track: int = 8
    mad_k: float = 3.0
    match_draws: int = 3

    def __post_init__(self) -> None:
        if self.match_draws < 1:
            raise ConfigError(f"MethodConfig.match_draws={self.match_draws} must be >= 1")

    @property
    def quorum(self) -> int:
        """Draws that must make a pair for it to stand: more than half of them."""
        return self.match_draws // 2 + 1


@dataclass
class Checkpoint:
    """Resumable state of :func:`adapt`: the round, its matches, the finetune state, history."""

    round: int
    matches: np.ndarray
    state: FinetuneState | None
    history: list[dict] = field(default_factory=list)
    done: bool = False


def bank_for(backbone: OnnxBackbone, crops: np.ndarray, cfg: MethodConfig, seed: int) -> ViewBank:
    """The :class:`~vcn.method.view_bank.ViewBank` that :func:`adapt` and :func:`cluster` read: views
    embedded by the torch recognizer on CUDA (bf16 autocast), else by the recognizer's CPU
    engine (:class:`vcn.faces.embedding.FaceEmbedder`, as many threads as torch has; bfloat16 for
    the augmented views where OpenVINO runs it)."""
    device = resolve_device(cfg.finetune)
    point = dropout_point(backbone, cfg.serfiq.mode)
    if device.type == "cuda":
        model = backbone.to(device)

        def embed(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            return embed_crops_with_features(model, x, point, 256, device)

        def embed_views(x: np.ndarray) -> np.ndarray:
            return embed_crops(model, x, 256, device)
    else:
        threads = torch.get_num_threads()
        # The engine's outputs do not depend on the batch, and 16 crops a call cost 15% less a
        # view than 64 (docs/method.md, "Cost").
        clean = FaceEmbedder(backbone.source, EmbeddingConfig(), threads, features=point)
        embed = clean.embed_with_features
        embed_views = FaceEmbedder(backbone.source, EmbeddingConfig(precision="bf16"), threads).embed
    return build_view_bank(embed, embed_views, backbone, crops, cfg.views, cfg.threshold_views,
                           cfg.match_draws, cfg.serfiq, seed)


def _pairs(m: np.ndarray) -> set[tuple[int, int]]:
    return {(int(a), int(b)) for a, b in np.asarray(m).reshape(-1, 2)}


def coarse_positives(
    bank: ViewBank, state: FinetuneState | None, track_index: np.ndarray, cfg: MethodConfig,
    cannot_link: np.ndarray,
) -> tuple[np.ndarray, list[np.ndarray]]:
    """One matching pass of :func:`adapt`: ``(voted, per_draw)`` positive track pairs.

    ``track_index`` (N,) int64 in 0..T-1 of the bank's faces, ``cannot_link`` (P, 2) int64
    track pairs. Each of the bank's draws of matching views runs
    :func:`vcn.method.grouping.grow_matches` under ``state`` (None: the generic model); ``voted``
    (M, 2) int64 are the pairs that ``cfg.quorum`` of them make
    (:func:`vcn.method.grouping.voted_matches`), ``per_draw`` each draw's.
    """
    n_views = bank.match.shape[2]
    v_index = np.repeat(track_index, n_views)
    n_tracks = int(track_index.max()) + 1 if len(track_index) else 0
    found, means = [], None
    for draw in bank.match:
        emb = face_embeddings(state, draw, cfg.finetune).reshape(-1, draw.shape[-1])
        found.append(grow_matches(emb, v_index, cfg.matching, cannot_link))
        if means is None:  # the first draw's track means order the voted pairs
            means = mean_directions(emb, v_index, n_tracks)
    return voted_matches(found, n_tracks, cfg.quorum, means, cannot_link), found


def final_round(trained: list[set[tuple[int, int]]], new: set[tuple[int, int]], last: int) -> int | None:
    """The round whose finetune round ``last`` would repeat, or None while the matches are new.

    ``trained`` holds the positive pairs of each round run so far (index = round), ``new`` the
    pairs matched after the latest one, ``last`` >= len(trained) - 1 the index of the final
    round. Rounds finetune afresh with one seed, so equal positives give an equal model: once
    ``new`` equals round k's pairs, the rounds from k on cycle with period len(trained) - k.
    """
    for k, pairs in enumerate(trained):
        if pairs == new:
            return k + (last - k) % (len(trained) - k)
    return None


def adapt(
    bank: ViewBank,
    track_index: np.ndarray,
    cfg: MethodConfig,
    seed: int,
    resume: Checkpoint | None = None,
    on_checkpoint: Callable[[Checkpoint], None] | None = None,
    cannot_link: np.ndarray | None = None,
) -> Checkpoint:
    """Alternate coarse matching and finetuning; return the final checkpoint.

    ``bank`` holds the views of the sampled faces (:func:`bank_for`), ``track_index`` (N,)
    int64 in 0..T-1 their tracks. ``cannot_link`` (P, 2) int64 pairs of tracks seen on one frame
    (:func:`vcn.method.constraints.cooccurring_pairs`): a match between them is dropped, since they are
    two people, and so is a match that would put two of them in one group through other matches
    (closest matches first). Matching is mutual, grows over groups of matched tracks
    (:func:`vcn.method.grouping.grow_matches`) and is voted over the bank's draws of views. Each round
    finetunes afresh from the generic model with the round's positives; when a round's matches
    repeat an earlier round's, the rounds left would repeat earlier finetunes, so the last
    round's outcome is taken from the round it would repeat (:func:`final_round`).
    """
    cannot = np.zeros((0, 2), np.int64) if cannot_link is None else cannot_link
    train_views = bank.training_views()

    def match(state: FinetuneState | None) -> np.ndarray:
        return coarse_positives(bank, state, track_index, cfg, cannot)[0]

    if resume is None:
        resume = Checkpoint(round=0, matches=match(None), state=None)
    ck = resume
    first, pairs = ck.round, _pairs(ck.matches)
    trained: list[tuple[set[tuple[int, int]], np.ndarray, FinetuneState]] = []
    while not ck.done:
        def save(s: FinetuneState, ck: Checkpoint = ck) -> None:
            if on_checkpoint is not None:
                on_checkpoint(Checkpoint(ck.round, ck.matches, s, list(ck.history)))

        state = finetune(train_views, track_index, ck.matches, cfg.finetune, seed, state=ck.state,
                         on_checkpoint=save)
        new = match(state)
        history = [*ck.history, {
            "round": ck.round, "matches": len(ck.matches), "next_matches": len(new),
            "steps": state.step, "final_loss": float(np.mean(state.losses[-20:])) if state.losses else None,
        }]
        trained.append((pairs, ck.matches, state))
        pairs = _pairs(new)
        end = final_round([t[0] for t in trained], pairs, cfg.matching.max_rounds - 1 - first)
        if end is not None or ck.round >= cfg.matching.max_rounds - 1:
            k = len(trained) - 1 if end is None else end
            history[-1]["outcome_round"] = first + k
            ck = Checkpoint(first + k, *trained[k][1:], history, done=True)
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
    tracks), the merge rounds, how many lone tracks that floor lifted (``lifted``), how many
    it would have lifted but for their quality (``held``), how many clusters the linking of
    fragments joined a larger cluster (``linked``, :func:`vcn.method.linking.link_fragments`) and
    how many set-aside tracks joined a cluster (``attached``, :func:`vcn.method.linking.attach_tracks`)."""

    labels: np.ndarray
    quality: np.ndarray
    unknown: np.ndarray
    thresholds: np.ndarray
    result: ParameterFreeResult | None
    lifted: int = 0
    held: int = 0
    linked: int = 0
    attached: int = 0


def _kept_pairs(remap: np.ndarray, pairs: np.ndarray | None) -> np.ndarray:
    """``(P', 2)`` int64 track ``pairs`` renumbered by ``remap`` (T,), keeping those whose two
    tracks are both kept (``remap >= 0``)."""
    sub = remap[np.asarray(pairs if pairs is not None else [], np.int64).reshape(-1, 2)]
    return sub[(sub >= 0).all(axis=1)]


def _group_thresholds(
    views: np.ndarray, unit: np.ndarray, group: np.ndarray, quality: np.ndarray
) -> tuple[np.ndarray, int, int]:
    """Stage-4 threshold of each matched group, with the cross-shot floor lent to lone groups.

    ``views`` (R, V, D) unit embeddings of the threshold views of R faces, ``unit`` (R,) int64
    their group, ``group`` (T,) int64 the group of each kept track, ``quality`` (T,) its
    quality. A group's threshold is the mean cosine distance between its views; a lone track
    within the quality range of the multi-track groups' tracks is floored at their median
    (:func:`vcn.method.thresholds.group_spread_floor`): its own views show one shot only. Returns
    ``(thresholds (G,) float64, lifted, held)``: the lone tracks the floor lifted, and those it
    would have lifted but for their quality.
    """
    thresholds = view_thresholds_embedding(views, unit, "cosine")
    sizes = np.bincount(group)
    # A group is as reliable as its weakest track: the floor was measured across it.
    group_quality = np.full(len(sizes), np.inf)
    np.minimum.at(group_quality, group, quality)
    ungated = group_spread_floor(thresholds, sizes)
    floored = np.where(in_quality_range(thresholds, sizes, group_quality), ungated, thresholds)
    lifted = int(np.sum(floored > np.nan_to_num(thresholds, nan=-np.inf)))
    held = int(np.sum(ungated > np.nan_to_num(floored, nan=-np.inf)))
    return floored, lifted, held


def cluster(
    bank: ViewBank,
    state: FinetuneState | None,
    track_index: np.ndarray,
    cfg: MethodConfig,
    cannot_link: np.ndarray | None = None,
    matches: np.ndarray | None = None,
    set_aside: np.ndarray | None = None,
) -> Clustering:
    """Quality filter and parameter-free clustering under the finetuned model.

    ``bank``, ``track_index`` as in :func:`adapt`; ``cannot_link`` (P, 2) int64 pairs of
    co-occurring tracks, which never end in one cluster; ``matches`` (M, 2) int64 track pairs
    of the last coarse matching (``Checkpoint.matches``). Tracks of low quality are ``unknown``.
    Clustering starts from the groups the matches made (tracks the finetune already learnt as
    one person) rather than from single tracks, on the mean cosine distance of the finetuned
    embeddings of the clean crops; each group's threshold comes from its faces'
    ``cfg.threshold_views`` (:func:`_group_thresholds`), so a group that spans shots brings its
    cross-shot spread to the merge test. A cluster then joins its nearest larger cluster when
    it lies nearer that cluster than any track seen on one frame with it
    (:func:`vcn.method.linking.link_fragments`). The returned thresholds are the floored ones.

    ``set_aside`` (T,) bool: tracks kept out of the clustering and placed after it, each in the
    cluster of its nearest clustered track when within that track's threshold
    (:func:`vcn.method.linking.attach_tracks`), else ``unknown``; vcn sets aside the tracks of
    the detector's second look (:func:`vcn.method.track_quality.second_look_tracks`).
    """
    n_tracks = int(track_index.max()) + 1 if len(track_index) else 0
    quality = track_quality(bank.quality, track_index)
    outlier = mad_low_outliers(np.nan_to_num(quality, nan=-np.inf), cfg.mad_k) | ~np.isfinite(quality)
    aside = np.zeros(n_tracks, bool) if set_aside is None else np.asarray(set_aside, bool)[:n_tracks]
    unknown = outlier | aside
    labels = np.full(n_tracks, -1, np.int64)
    keep_tracks = np.flatnonzero(~unknown)
    if len(keep_tracks) == 0:
        return Clustering(labels, quality, unknown, np.full(n_tracks, np.nan), None)
    remap = np.full(n_tracks, -1, np.int64)
    remap[keep_tracks] = np.arange(len(keep_tracks))
    cannot = _kept_pairs(remap, cannot_link)
    group = match_groups(_kept_pairs(remap, matches), len(keep_tracks))
    rows = np.flatnonzero(remap[track_index] >= 0)
    kept_index = remap[track_index[rows]]
    views = face_embeddings(state, bank.thresh[rows], cfg.finetune)  # (R, V, D); view 0 the crop
    thresholds, lifted, held = _group_thresholds(views, group[kept_index], group, quality[keep_tracks])
    stats = embedding_track_stats(views[:, 0], group[kept_index], "cosine")
    result = parameter_free(stats, CosineDistance(), thresholds, group_pairs(cannot, group))
    merged = result.labels[group]  # (kept tracks,) cluster of each kept track
    track_sums = index_sums(views[:, 0], kept_index, len(keep_tracks))
    linked = link_fragments(track_sums, merged, cannot)
    labels[keep_tracks] = first_appearance(linked)
    full_thr = np.full(n_tracks, np.nan)
    full_thr[keep_tracks] = thresholds[group]
    placed = np.flatnonzero(aside & ~outlier)
    if len(placed):
        held_rows = np.flatnonzero(np.isin(track_index, placed))
        units = np.zeros((n_tracks, views.shape[-1]))
        units[keep_tracks] = unit_rows(track_sums)
        units[placed] = mean_directions(face_embeddings(state, bank.thresh[held_rows, 0], cfg.finetune),
                                        track_index[held_rows], n_tracks)[placed]
        labels = attach_tracks(units, labels, full_thr, placed, cannot_link if cannot_link is not None
                               else np.zeros((0, 2), np.int64))
        unknown = unknown & (labels < 0)
    return Clustering(labels, quality, unknown, full_thr, result, lifted, held,
                      linked=int(merged.max()) - int(linked.max()),
                      attached=int(np.sum(labels[placed] >= 0)))
