"""vcn.method.finetune and vcn.method.view_bank: DINO loss, centring and EMA by hand; the view bank of real
faces; a tiny real finetune that trains, keeps the adapter at the identity in the head stage and
resumes bit-exactly on the CPU; the voted matching of adapt."""

from __future__ import annotations

import copy
import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from vcn.errors import ConfigError, InputError
from vcn.method.finetune import (
    FinetuneConfig,
    dino_loss,
    ema_update,
    face_embeddings,
    finetune,
    pair_loss,
    teacher_momentum,
    update_center,
)
from vcn.method.track_quality import SerFiqConfig, dropout_point
from vcn.method.view_bank import build_view_bank, embed_crops, embed_crops_with_features
from vcn.method.views import ViewConfig, strong_views

DATA = Path(__file__).parent / "data"
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="the CUDA path needs a CUDA device")



def test_dino_loss_by_hand() -> None:
    s = torch.tensor([[1.0, 2.0, 3.0]])
    t = torch.tensor([[3.0, 1.0, 0.0]])
    c = torch.tensor([1.0, 0.0, 0.0])
    # teacher: softmax(([3,1,0] - [1,0,0]) / 0.5) = softmax([4, 2, 0]); student: log_softmax([1,2,3] / 1)
    z = math.exp(4) + math.exp(2) + 1
    target = [math.exp(4) / z, math.exp(2) / z, 1 / z]
    lse = math.log(math.e + math.e**2 + math.e**3)
    want = -sum(p * (v - lse) for p, v in zip(target, [1, 2, 3], strict=True))
    got = dino_loss(s, t, c, temp_s=1.0, temp_t=0.5)
    assert got.item() == pytest.approx(want, abs=1e-6)
    assert want == pytest.approx(2.2585, abs=1e-4)
    # batch mean, and the symmetrised pair loss averages both directions
    s2, t2 = torch.tensor([[0.0, 0.0, 1.0]]), torch.tensor([[1.0, 0.0, 0.0]])
    both = pair_loss(s, s2, t, t2, c, 1.0, 0.5)
    assert both.item() == pytest.approx(
        0.5 * (dino_loss(s2, t, c, 1.0, 0.5) + dino_loss(s, t2, c, 1.0, 0.5)).item()
    )
    assert pair_loss(s2, s, t2, t, c, 1.0, 0.5).item() == pytest.approx(both.item())


def test_teacher_gets_no_gradient() -> None:
    s = torch.tensor([[1.0, 2.0, 3.0]], requires_grad=True)
    t = torch.tensor([[3.0, 1.0, 0.0]], requires_grad=True)
    dino_loss(s, t, torch.zeros(3), 0.1, 0.04).backward()
    assert t.grad is None
    assert s.grad is not None and s.grad.abs().sum() > 0


def test_centre_and_ema_updates_by_hand() -> None:
    c = update_center(torch.zeros(3), torch.tensor([[1.0, 2.0, 3.0], [3.0, 2.0, 1.0]]), momentum=0.9)
    assert torch.allclose(c, torch.tensor([0.2, 0.2, 0.2]))
    c = update_center(c, torch.tensor([[1.2, 0.2, 0.2]]), momentum=0.5)
    assert torch.allclose(c, torch.tensor([0.7, 0.2, 0.2]))
    teacher, student = [torch.tensor([1.0, 1.0])], [torch.tensor([3.0, 5.0])]
    ema_update(teacher, student, 0.75)
    assert torch.allclose(teacher[0], torch.tensor([1.5, 2.0]))
    assert torch.equal(student[0], torch.tensor([3.0, 5.0]))
    assert teacher_momentum(0, 100, 0.996) == pytest.approx(0.996)
    assert teacher_momentum(50, 100, 0.996) == pytest.approx(0.998)
    assert teacher_momentum(100, 100, 0.996) == pytest.approx(1.0)


def test_budget_scales_with_tracks_and_is_capped() -> None:
    cfg = FinetuneConfig()
    assert cfg.stage_steps(10) == (cfg.min_steps, cfg.min_steps)
    assert cfg.stage_steps(10_000) == (cfg.max_steps, cfg.max_steps)
    small, large = cfg.stage_steps(150), cfg.stage_steps(300)
    assert small[0] <= large[0]
    with pytest.raises(ConfigError, match="device"):
        FinetuneConfig(device="tpu")


# -- a tiny real finetune ----------------------------------------------------------------------

TINY = FinetuneConfig(
    out_dim=64,
    hidden_dim=64,
    bottleneck_dim=32,
    batch_pairs=8,
    min_steps=6,
    max_steps=6,
    checkpoint_every=3,
    head_lr=3e-3,
    adapter_lr=1e-3,
    device="cpu",
)
SMALL_VIEWS = ViewConfig(n_views=3)


@pytest.fixture(scope="module")
def video(h5_faces, backbone):
    crops, tracks = h5_faces
    names = sorted(set(tracks))
    track_index = np.array([names.index(t) for t in tracks], np.int64)
    # coarse matching linked Miranda's two tracks and Lacamoire's two tracks
    matches = np.array(
        [
            [names.index("hamilton-0"), names.index("hamilton-10")],
            [names.index("hamilton-1"), names.index("hamilton-2")],
        ],
        np.int64,
    )
    def embed(x: np.ndarray) -> np.ndarray:
        return embed_crops(backbone, x, 32, torch.device("cpu"))

    def embed_clean(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        point = dropout_point(backbone, SerFiqConfig().mode)
        return embed_crops_with_features(backbone, x, point, 32, torch.device("cpu"))

    bank = build_view_bank(embed_clean, embed, backbone, crops, SMALL_VIEWS, SMALL_VIEWS, 3,
                           SerFiqConfig(passes=4), seed=1)
    return bank, track_index, matches


@pytest.fixture(scope="module")
def run(video):
    bank, track_index, matches = video
    checkpoints = []
    final = finetune(bank.training_views(), track_index, matches, TINY, seed=7,
                     on_checkpoint=checkpoints.append)
    return final, checkpoints


def test_view_bank_holds_the_generic_embeddings_of_the_drawn_views(video, backbone, h5_faces) -> None:
    bank = video[0]
    crops = h5_faces[0]
    assert bank.match.shape == (3, 45, 3, 512) and bank.thresh.shape == (45, 3, 512)
    assert bank.match.dtype == np.float16 and bank.quality.shape == (45,)
    clean = embed_crops(backbone, crops, 32, torch.device("cpu"))
    np.testing.assert_allclose(bank.clean, clean, atol=2e-3)
    views = strong_views(crops, SMALL_VIEWS, (1, 2))  # the third draw's views
    want = embed_crops(backbone, views.reshape(-1, 112, 112, 3), 32, torch.device("cpu")).reshape(45, 3, -1)
    np.testing.assert_allclose(bank.match[2].astype(np.float32), want, atol=2e-3)
    assert not np.allclose(bank.match[1], bank.match[2], atol=1e-2), "draws are independent"
    assert bank.training_views().shape == (45, 3 * 3 + 3, 512)


def test_view_bank_scores_blocks_of_crops_as_one_pass(video, backbone, h5_faces, monkeypatch) -> None:
    """Clean crops and their SER-FIQ quality go a block at a time (bounded memory), to the same numbers."""
    import vcn.method.view_bank as view_bank

    crops = h5_faces[0]
    point = dropout_point(backbone, SerFiqConfig().mode)
    blocks = []

    def embed_clean(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        blocks.append(len(x))
        return embed_crops_with_features(backbone, x, point, 8, torch.device("cpu"))

    def embed(x: np.ndarray) -> np.ndarray:
        return embed_crops(backbone, x, 32, torch.device("cpu"))

    monkeypatch.setattr(view_bank, "_QUALITY_BLOCK", 16)
    small = build_view_bank(embed_clean, embed, backbone, crops, SMALL_VIEWS, SMALL_VIEWS, 1,
                            SerFiqConfig(passes=4), seed=1)
    assert blocks == [16, 16, 13]
    np.testing.assert_allclose(small.quality, video[0].quality, rtol=1e-6)
    np.testing.assert_allclose(small.clean, video[0].clean, atol=1e-3)


def test_checkpoints_cover_both_stages(run) -> None:
    final, cks = run
    assert [(c.step, c.stage) for c in cks] == [(3, "head"), (6, "joint"), (9, "joint"), (12, "done")]
    assert final.stage == "done" and final.step == 12 and len(final.losses) == 12
    assert cks[1].optimizer is None and cks[2].optimizer is not None


def test_head_stage_leaves_the_adapter_at_identity_and_joint_stage_trains_it(run) -> None:
    final, cks = run
    eye = torch.eye(512)
    after_head = cks[1]
    for adapter in (after_head.student_adapter, after_head.teacher_adapter):
        assert torch.equal(adapter["linear.weight"], eye) and not adapter["linear.bias"].any()
    student_step = (final.student_adapter["linear.weight"] - eye).norm().item()
    teacher_step = (final.teacher_adapter["linear.weight"] - eye).norm().item()
    # the EMA teacher follows the student, more slowly
    assert 0 < teacher_step < student_step
    assert not torch.equal(final.student_head["prototypes"], cks[0].student_head["prototypes"])


def test_loss_decreases(run) -> None:
    losses = np.array(run[0].losses)
    assert np.isfinite(losses).all()
    assert losses[-3:].mean() < losses[:3].mean() - 0.2


@pytest.mark.parametrize("resume_from", [0, 2])
def test_resume_gives_the_same_final_weights(run, video, resume_from: int) -> None:
    final, cks = run
    bank, track_index, matches = video
    resumed = finetune(bank.training_views(), track_index, matches, TINY, seed=7, state=cks[resume_from])
    assert resumed.losses == final.losses
    assert torch.equal(resumed.center, final.center)
    for got, want in [
        (resumed.student_adapter, final.student_adapter),
        (resumed.teacher_adapter, final.teacher_adapter),
        (resumed.student_head, final.student_head),
        (resumed.teacher_head, final.teacher_head),
    ]:
        assert got.keys() == want.keys()
        assert all(torch.equal(got[k], want[k]) for k in want)
    with pytest.raises(ConfigError, match="state"):
        finetune(bank.training_views(), track_index, matches, TINY, seed=8, state=cks[resume_from])


def test_resume_from_a_checkpoint_file(run, video, tmp_path) -> None:
    """A state saved mid-joint-stage (optimizer moments, generator state, losses) survives the
    file round trip, read with ``weights_only=True``, and resumes to the same final weights."""
    from vcn.method.videoclusternet import Checkpoint
    from vcn.storage.checkpoints import load_checkpoint, save_checkpoint

    final, cks = run
    bank, track_index, matches = video
    assert cks[2].optimizer is not None and cks[2].optimizer["state"]
    save_checkpoint(tmp_path / "checkpoint.pt", Checkpoint(1, matches, cks[2], [{"round": 0, "loss": 1.5}]))
    raw = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert isinstance(raw["matches"], torch.Tensor), "numpy arrays are stored as tensors"
    back = load_checkpoint(tmp_path / "checkpoint.pt")
    assert (back.round, back.history, back.done) == (1, [{"round": 0, "loss": 1.5}], False)
    np.testing.assert_array_equal(back.matches, matches)
    assert back.matches.dtype == np.int64
    assert torch.equal(back.state.generator, cks[2].generator) and back.state.losses == cks[2].losses
    resumed = finetune(bank.training_views(), track_index, back.matches, TINY, seed=7, state=back.state)
    assert resumed.losses == final.losses
    for got, want in [(resumed.student_adapter, final.student_adapter),
                      (resumed.teacher_adapter, final.teacher_adapter),
                      (resumed.student_head, final.student_head), (resumed.teacher_head, final.teacher_head)]:
        assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in want)


def test_face_embeddings(run, video) -> None:
    final, _ = run
    bank = video[0]
    rows = np.array([0, 2, 27, 31, 43, 44])
    out = face_embeddings(final, bank.clean[rows], TINY)
    assert out.shape == (6, 512) and out.dtype == np.float32
    assert np.allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)
    # a short finetune keeps the identity space of the generic model
    assert (out * bank.clean[rows]).sum(1).min() > 0.9
    # any leading shape; the generic model (no state) only re-normalises
    per_view = face_embeddings(final, bank.thresh[rows], TINY)
    assert per_view.shape == (6, 3, 512)
    np.testing.assert_allclose(per_view[:, 0], out, atol=1e-3)
    np.testing.assert_allclose(face_embeddings(None, bank.thresh, TINY), bank.thresh, atol=1e-3)


@cuda
def test_views_embed_on_cuda_within_bf16_of_the_cpu(backbone, h5_faces) -> None:
    crops = h5_faces[0][:16]
    on_cpu = embed_crops(backbone, crops, 8, torch.device("cpu"))
    on_gpu = embed_crops(copy.deepcopy(backbone).to("cuda"), crops, 8, torch.device("cuda"))
    assert on_gpu.shape == on_cpu.shape == (16, 512)
    assert (on_cpu * on_gpu).sum(1).min() > 0.99  # both L2-normalised


@cuda
def test_finetune_on_cuda_trains_the_model_the_cpu_trains(run, video) -> None:
    """Initial weights and the pair sampler come from CPU generators, so the CUDA run follows
    the CPU run's steps up to float rounding; its state comes back on the CPU."""
    final, _ = run
    bank, track_index, matches = video
    gpu_cfg = dataclasses.replace(TINY, device="cuda")
    on_gpu = finetune(bank.training_views(), track_index, matches, gpu_cfg, seed=7)
    assert on_gpu.stage == "done" and on_gpu.step == final.step
    assert on_gpu.center.device.type == "cpu"
    np.testing.assert_allclose(on_gpu.losses, final.losses, atol=1e-2)
    got = face_embeddings(on_gpu, bank.clean, gpu_cfg)
    assert (got * face_embeddings(final, bank.clean, TINY)).sum(1).min() > 0.999


def test_inputs_are_checked(video) -> None:
    bank, track_index, matches = video
    views = bank.training_views()
    with pytest.raises(InputError, match="track_index"):
        finetune(views, track_index[:-1], matches, TINY, seed=0)
    with pytest.raises(InputError, match="matches"):
        finetune(views, track_index, np.array([[0, 99]]), TINY, seed=0)
    with pytest.raises(InputError, match="view embeddings"):
        finetune(views[:, 0], track_index, matches, TINY, seed=0)
    assert dataclasses.is_dataclass(TINY)


def test_adapt_keeps_only_the_groups_a_majority_of_draws_makes(video) -> None:
    """``match_draws=2`` (a majority of two is both): adapt's first positives are the track
    pairs that both draws' grown matchings put in one group."""
    from vcn.method.constraints import cooccurring_pairs
    from vcn.method.grouping import match_groups, pairs_within_groups
    from vcn.method.matching import MatchingConfig
    from vcn.method.videoclusternet import MethodConfig, adapt, coarse_positives
    from vcn.method.view_bank import ViewBank

    bank, track_index, _ = video
    two_draws = ViewBank(bank.match[:2], bank.thresh, bank.quality)
    cfg = MethodConfig(finetune=TINY, matching=MatchingConfig(mutual=True, max_rounds=1),
                       views=SMALL_VIEWS, match_draws=2)
    ck = adapt(two_draws, track_index, cfg, seed=3)
    cannot = cooccurring_pairs(np.arange(len(track_index)), track_index)
    _, per_draw = coarse_positives(two_draws, None, track_index, cfg, cannot)
    n = int(track_index.max()) + 1
    both = set.intersection(*[{tuple(p) for p in pairs_within_groups(match_groups(d, n)).tolist()}
                              for d in per_draw])
    assert ck.done and {tuple(p) for p in np.asarray(ck.matches).tolist()} == both
    assert ck.history[0]["matches"] == len(ck.matches)


def test_coarse_positives_vote_over_the_draws(video) -> None:
    """Each draw of the bank runs the grown matching; the positives are the pairs a majority of
    the draws' groups hold (on these faces the three draws differ, so the vote is not any one)."""
    from vcn.method.constraints import cooccurring_pairs
    from vcn.method.grouping import grow_matches, match_groups, pairs_within_groups
    from vcn.method.matching import MatchingConfig
    from vcn.method.videoclusternet import MethodConfig, coarse_positives

    bank, track_index, _ = video
    cannot = cooccurring_pairs(np.arange(len(track_index)), track_index)  # one face a frame: none
    cfg = MethodConfig(finetune=TINY, matching=MatchingConfig(mutual=True), views=SMALL_VIEWS)
    v_index = np.repeat(track_index, 3)
    emb = face_embeddings(None, bank.match, TINY)
    draws = [grow_matches(e.reshape(-1, 512), v_index, cfg.matching, cannot) for e in emb]
    voted, per_draw = coarse_positives(bank, None, track_index, cfg, cannot)
    assert [d.tolist() for d in per_draw] == [d.tolist() for d in draws]
    n = int(track_index.max()) + 1
    sets = [{tuple(p) for p in pairs_within_groups(match_groups(d, n)).tolist()} for d in draws]
    majority = {p for p in set.union(*sets) if sum(p in s for s in sets) >= 2}
    got = {tuple(p) for p in voted.tolist()}
    assert majority <= got and got <= set.union(*sets) | majority
    assert len({frozenset(s) for s in sets}) > 1, "the draws should differ on these faces"
