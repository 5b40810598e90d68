"""vcn.finetune: DINO loss, centring and EMA by hand; a tiny real finetune that trains, keeps
the backbone frozen in the head stage and resumes bit-exactly on the CPU."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from vcn.augment import AugmentConfig, augment, colour_temperature, hflip, rotate
from vcn.backbone import preprocess
from vcn.errors import ConfigError, InputError
from vcn.finetune import (
    FinetuneConfig,
    dino_loss,
    ema_update,
    face_outputs,
    finetune,
    pair_loss,
    teacher_momentum,
    update_center,
    view_outputs,
)

DATA = Path(__file__).parent / "data"



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


def test_augmentations_on_a_real_face(h5_faces) -> None:
    x = preprocess(h5_faces[0][[43, 44]])
    assert torch.equal(hflip(x, torch.tensor([True, False])), torch.stack([x[0].flip(-1), x[1]]))
    assert torch.allclose(rotate(x, torch.zeros(2)), x, atol=1e-5)
    turned = rotate(x, torch.tensor([10.0, -10.0]))
    assert 0.01 < (turned - x).abs().mean() < 0.5
    warm = colour_temperature(x, torch.tensor([1.0, -1.0]), AugmentConfig())
    red, blue = (warm - x)[:, 0].mean((1, 2)), (warm - x)[:, 2].mean((1, 2))
    assert red[0] > 0 > blue[0] and red[1] < 0 < blue[1]  # warm, then cool
    assert torch.allclose(warm[:, 1], x[:, 1], atol=1e-6)  # green untouched
    a = augment(x, AugmentConfig(), torch.Generator().manual_seed(5))
    b = augment(x, AugmentConfig(), torch.Generator().manual_seed(5))
    assert torch.equal(a, b) and not torch.equal(a, x) and a.shape == x.shape
    assert float(a.min()) >= -1.0 - 1e-6 and float(a.max()) <= 1.0 + 1e-6
    with pytest.raises(ConfigError):
        AugmentConfig(max_rotation_deg=90)


# -- a tiny real finetune ----------------------------------------------------------------------

TINY = FinetuneConfig(
    out_dim=64,
    hidden_dim=64,
    bottleneck_dim=32,
    batch_pairs=8,
    faces_per_track=2,
    cached_views=2,
    min_steps=6,
    max_steps=6,
    checkpoint_every=3,
    head_lr=3e-3,
    backbone_lr=1e-4,
    trainable_layers=3,
    device="cpu",
)


@pytest.fixture(scope="module")
def video(h5_faces):
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
    return crops, track_index, matches


@pytest.fixture(scope="module")
def run(backbone, video):
    crops, track_index, matches = video
    checkpoints = []
    final = finetune(backbone, crops, track_index, matches, TINY, seed=7, on_checkpoint=checkpoints.append)
    return final, checkpoints


def test_checkpoints_cover_both_stages(run) -> None:
    final, cks = run
    assert [(c.step, c.stage) for c in cks] == [(3, "head"), (6, "joint"), (9, "joint"), (12, "done")]
    assert final.stage == "done" and final.step == 12 and len(final.losses) == 12
    assert cks[1].optimizer is None and cks[2].optimizer is not None


def test_head_stage_leaves_backbone_unchanged_and_joint_stage_trains_it(run, backbone) -> None:
    final, cks = run
    original = dict(backbone.named_parameters())
    after_head = cks[1]
    assert after_head.student_tail.keys() == final.student_tail.keys()
    for name, value in after_head.student_tail.items():
        assert torch.equal(value, original[name].detach()), name
        assert torch.equal(after_head.teacher_tail[name], original[name].detach()), name
    moved = [n for n, v in final.student_tail.items() if not torch.equal(v, original[n].detach())]
    assert len(moved) == len(final.student_tail)
    # the EMA teacher follows the student, more slowly
    student_step = sum((final.student_tail[n] - original[n].detach()).norm().item() for n in moved)
    teacher_step = sum((final.teacher_tail[n] - original[n].detach()).norm().item() for n in moved)
    assert 0 < teacher_step < student_step
    assert not torch.equal(final.student_head["prototypes"], cks[0].student_head["prototypes"])


def test_loss_decreases(run) -> None:
    losses = np.array(run[0].losses)
    assert np.isfinite(losses).all()
    assert losses[-3:].mean() < losses[:3].mean() - 0.2


@pytest.mark.parametrize("resume_from", [0, 2])
def test_resume_gives_the_same_final_weights(run, backbone, video, resume_from: int) -> None:
    final, cks = run
    crops, track_index, matches = video
    resumed = finetune(backbone, crops, track_index, matches, TINY, seed=7, state=cks[resume_from])
    assert resumed.losses == final.losses
    assert torch.equal(resumed.center, final.center)
    for got, want in [
        (resumed.student_tail, final.student_tail),
        (resumed.teacher_tail, final.teacher_tail),
        (resumed.student_head, final.student_head),
        (resumed.teacher_head, final.teacher_head),
    ]:
        assert got.keys() == want.keys()
        assert all(torch.equal(got[k], want[k]) for k in want)
    with pytest.raises(ConfigError, match="state"):
        finetune(backbone, crops, track_index, matches, TINY, seed=8, state=cks[resume_from])


def test_resume_from_a_checkpoint_file(run, backbone, video, tmp_path) -> None:
    """A state saved mid-joint-stage (optimizer moments, generator state, losses) survives the
    file round trip, read with ``weights_only=True``, and resumes to the same final weights."""
    from storage.checkpoints import load_checkpoint, save_checkpoint
    from vcn.method import Checkpoint

    final, cks = run
    crops, track_index, matches = video
    assert cks[2].optimizer is not None and cks[2].optimizer["state"]
    save_checkpoint(tmp_path / "checkpoint.pt", Checkpoint(1, matches, cks[2], [{"round": 0, "loss": 1.5}]))
    raw = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert isinstance(raw["matches"], torch.Tensor), "numpy arrays are stored as tensors"
    back = load_checkpoint(tmp_path / "checkpoint.pt")
    assert (back.round, back.history, back.done) == (1, [{"round": 0, "loss": 1.5}], False)
    np.testing.assert_array_equal(back.matches, matches)
    assert back.matches.dtype == np.int64
    assert torch.equal(back.state.generator, cks[2].generator) and back.state.losses == cks[2].losses
    resumed = finetune(backbone, crops, track_index, back.matches, TINY, seed=7, state=back.state)
    assert resumed.losses == final.losses
    for got, want in [(resumed.student_tail, final.student_tail), (resumed.teacher_tail, final.teacher_tail),
                      (resumed.student_head, final.student_head), (resumed.teacher_head, final.teacher_head)]:
        assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in want)


def test_face_outputs(run, backbone, video) -> None:
    final, _ = run
    crops = video[0]
    rows = np.array([0, 2, 27, 31, 43, 44])
    out = face_outputs(backbone, final, crops[rows], TINY)
    assert out.embeddings.shape == (6, 512) and out.embeddings.dtype == np.float32
    assert np.allclose(np.linalg.norm(out.embeddings, axis=1), 1.0, atol=1e-5)
    assert out.teacher_probs.shape == out.student_logprobs.shape == (6, TINY.out_dim)
    assert np.allclose(out.teacher_probs.sum(1), 1.0, atol=1e-5)
    assert np.allclose(np.exp(out.student_logprobs).sum(1), 1.0, atol=1e-5)
    # a short finetune at a small learning rate keeps the identity space of the ONNX model
    with torch.no_grad():
        ref = torch.nn.functional.normalize(backbone.eval()(preprocess(crops[rows])), dim=-1).numpy()
    assert (out.embeddings * ref).sum(1).min() > 0.9
    two = face_outputs(backbone, final, crops[rows], TINY, views=2, seed=3)
    assert not np.allclose(two.teacher_probs, out.teacher_probs)
    assert (two.embeddings * out.embeddings).sum(1).min() > 0.9
    per_view = view_outputs(backbone, final, crops[rows], TINY, views=2, seed=3)
    assert per_view.teacher_probs.shape == per_view.student_logprobs.shape == (6, 2, TINY.out_dim)
    assert per_view.embeddings.shape == (6, 2, 512)
    assert np.allclose(per_view.teacher_probs[:, 0], out.teacher_probs, atol=1e-6)  # view 0 is clean
    assert np.allclose(per_view.teacher_probs.mean(1), two.teacher_probs, atol=1e-6)


def test_inputs_are_checked(backbone, video) -> None:
    crops, track_index, matches = video
    with pytest.raises(InputError, match="track_index"):
        finetune(backbone, crops, track_index[:-1], matches, TINY, seed=0)
    with pytest.raises(InputError, match="matches"):
        finetune(backbone, crops, track_index, np.array([[0, 99]]), TINY, seed=0)
    with pytest.raises(ConfigError, match="load_backbone"):
        finetune(torch.nn.Linear(2, 2), crops, track_index, matches, TINY, seed=0)
    assert dataclasses.is_dataclass(TINY)


def test_adapt_keeps_only_the_groups_every_draw_of_views_makes(backbone, video) -> None:
    """``match_draws=2`` (a majority of two is both) matches on the first draw's views and on a
    second draw's and keeps their agreement: on these faces (generic model, 3 views) the first
    draw links three pairs of tracks, the second one of them, so two draws keep that one."""
    from vcn.matching import MatchingConfig
    from vcn.method import MethodConfig, adapt
    from vcn.views import ViewConfig

    crops, track_index, _ = video
    cfg = MethodConfig(finetune=TINY, matching=MatchingConfig(mutual=True, max_rounds=1),
                       views=ViewConfig(n_views=3), match_draws=1)
    one = adapt(backbone, crops, track_index, cfg, seed=3)
    two = adapt(backbone, crops, track_index, dataclasses.replace(cfg, match_draws=2), seed=3)
    pairs = lambda ck: {tuple(p) for p in np.asarray(ck.matches).tolist()}  # noqa: E731
    assert one.done and two.done
    assert pairs(two) <= pairs(one)
    assert 0 < len(two.matches) < len(one.matches)
    assert two.history[0]["matches"] == len(two.matches)


def test_coarse_positives_vote_over_the_draws_adapt_makes(backbone, video) -> None:
    """Draw 0 is drawn from the seed alone, so one draw is the single-draw matching of before,
    and each further draw from ``(seed, d)``; the positives are the pairs a majority of the
    draws' groups hold (on these faces the three draws differ, so the vote is not any one)."""
    from vcn.constraints import cooccurring_pairs
    from vcn.grouping import grow_matches, match_groups, pairs_within_groups
    from vcn.matching import MatchingConfig
    from vcn.method import MethodConfig, coarse_positives, matching_embeddings
    from vcn.views import ViewConfig

    crops, track_index, _ = video
    cannot = cooccurring_pairs(np.arange(len(track_index)), track_index)  # one face a frame: none
    cfg = MethodConfig(finetune=TINY, matching=MatchingConfig(mutual=True), views=ViewConfig(n_views=3))
    v_index = np.repeat(track_index, 3)
    draws = [grow_matches(matching_embeddings(backbone, None, crops, cfg, s), v_index, cfg.matching, cannot)
             for s in (3, (3, 1), (3, 2))]
    voted, per_draw = coarse_positives(backbone, None, crops, track_index, cfg, 3, cannot)
    assert [d.tolist() for d in per_draw] == [d.tolist() for d in draws]
    single, _ = coarse_positives(backbone, None, crops, track_index,
                                 dataclasses.replace(cfg, match_draws=1), 3, cannot)
    assert single.tolist() == draws[0].tolist()
    n = int(track_index.max()) + 1
    sets = [{tuple(p) for p in pairs_within_groups(match_groups(d, n)).tolist()} for d in draws]
    majority = {p for p in set.union(*sets) if sum(p in s for s in sets) >= 2}
    got = {tuple(p) for p in voted.tolist()}
    assert majority <= got and got <= set.union(*sets) | majority
    assert len({frozenset(s) for s in sets}) > 1, "the draws should differ on these faces"


def test_matching_views_drawn_block_by_block_embed_as_one_pass(run, backbone, video) -> None:
    """``adapt`` draws and embeds its matching views a block of faces at a time; the blocks are
    the one draw of ``strong_views`` cut in pieces, and with blocks a multiple of the forward
    batch the embeddings are those of one pass, bit for bit (so the matches cannot move)."""
    from vcn.method import MethodConfig, matching_embeddings, view_embeddings
    from vcn.views import ViewConfig, strong_view_blocks, strong_views

    crops = video[0]  # 45 faces: blocks of 32 and 13
    cfg = MethodConfig(finetune=TINY, views=ViewConfig(n_views=3))
    whole = strong_views(crops, cfg.views, (5, 1))
    blocks = list(strong_view_blocks(crops, cfg.views, (5, 1), 32))
    assert [len(b) for b in blocks] == [32, 13]
    np.testing.assert_array_equal(np.concatenate(blocks), whole)
    for state in (None, run[0]):
        one_pass = view_embeddings(backbone, state, whole, cfg)
        assert one_pass.shape == (45 * 3, 512)
        blocked = matching_embeddings(backbone, state, crops, cfg, (5, 1), block=32)
        np.testing.assert_array_equal(blocked, one_pass)
    with pytest.raises(ConfigError, match="block"):
        strong_view_blocks(crops, cfg.views, 0, 0)
