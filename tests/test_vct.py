"""VCT: the sequence transformer recovers identities that average pooling cannot, and the stage
runs on a real title's tracks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vcn.errors import ConfigError, InputError
from vcn.method.vct import (
    MeanPool,
    VctConfig,
    cluster_track_embeddings,
    embed_tracks,
    track_sequences,
    train_vct,
)


def drifting_tracks(seed: int, ids: int = 4, scenes: int = 20, dim: int = 512):
    """Scenes of two co-occurring tracks of two identities. Every track's faces move along a
    straight line through one shared embedding, identity ``k`` along its own direction ``u_k``
    and from ``-u_k`` to ``+u_k``: the mean of every track is the shared embedding, so only how
    the embedding changes along the track tells who it is."""
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.normal(size=(dim, ids + 1)))
    base, dirs = q[:, 0], q[:, 1:].T
    emb, index, frames, label = [], [], [], []
    for s in range(scenes):
        length = 16 * int(rng.integers(3, 5))
        for k in rng.choice(ids, 2, replace=False):
            ramp = np.linspace(-1.0, 1.0, length)[:, None] * dirs[k][None]
            emb.append(base[None] + 0.6 * ramp + rng.normal(0, 0.02, (length, dim)))
            index.append(np.full(length, len(label)))
            frames.append(1000 * s + np.arange(length))
            label.append(k)
    return (np.concatenate(emb).astype(np.float32), np.concatenate(index), np.concatenate(frames),
            np.array(label))


def nearest_identity_rate(z: np.ndarray, label: np.ndarray) -> float:
    sim = z @ z.T
    np.fill_diagonal(sim, -np.inf)
    return float(np.mean(label[sim.argmax(1)] == label))


def test_transformer_beats_average_pooling_on_drifting_identities():
    emb, index, frames, label = drifting_tracks(0)
    cfg = VctConfig(min_steps=150, max_steps=150, batch_tracks=64)
    seqs = track_sequences(emb, index, frames, len(label), cfg.pool_faces)
    cannot = np.arange(len(label)).reshape(-1, 2)  # the two tracks of a scene
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        model = train_vct(seqs, cannot, cfg, seed=0)
        vct = embed_tracks(model.encoder, seqs, cfg, seed=0)
    finally:
        torch.set_num_threads(before)
    mean = embed_tracks(MeanPool(), seqs, cfg, seed=0)
    assert nearest_identity_rate(mean, label) < 0.5  # chance is 0.25
    assert nearest_identity_rate(vct, label) >= 0.8
    assert model.losses[-1] < model.losses[0]


def test_untrained_encoder_is_average_pooling():
    emb, index, frames, label = drifting_tracks(1, scenes=3)
    cfg = VctConfig()
    seqs = track_sequences(emb, index, frames, len(label), cfg.pool_faces)
    from vcn.method.vct import TrackEncoder

    torch.manual_seed(0)
    out = embed_tracks(TrackEncoder(cfg).eval(), seqs, cfg, seed=0)
    np.testing.assert_allclose(out, embed_tracks(MeanPool(), seqs, cfg, seed=0), atol=1e-5)


def test_track_sequences_sample_evenly_in_frame_order():
    emb = np.eye(8, dtype=np.float32)[[3, 1, 2, 0, 5, 4, 6, 7]]
    index = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    frames = np.array([30, 10, 20, 0, 5, 4, 6, 7])
    seqs = track_sequences(emb, index, frames, 2, pool=3)
    assert seqs.length.tolist() == [3, 3]
    assert seqs.frames[0].tolist() == [0, 20, 30] or seqs.frames[0].tolist() == [0, 10, 30]
    assert seqs.frames[1, 0] == 4 and seqs.frames[1, -1] == 7
    with pytest.raises(InputError):
        track_sequences(emb, index, frames, 3, pool=3)


def test_clustering_keeps_cannot_links_apart_and_sets_low_quality_aside():
    rng = np.random.default_rng(0)
    people = np.linalg.qr(rng.normal(size=(64, 3)))[0].T
    who = np.array([0, 0, 1, 1, 2, 2, 0])
    views = people[who][:, None, :] + rng.normal(0, 0.05, (7, 6, 64))
    views /= np.linalg.norm(views, axis=2, keepdims=True)
    track = people[who] / np.linalg.norm(people[who], axis=1, keepdims=True)
    face_track = np.repeat(np.arange(7), 5)
    quality = np.where(face_track == 6, 0.01, 0.8 + 0.01 * rng.random(35))
    res = cluster_track_embeddings(track, views, quality, face_track, np.array([[0, 1]]))
    assert res.unknown.tolist() == [False] * 6 + [True]
    assert res.labels[6] == -1
    assert res.labels[0] != res.labels[1]
    assert res.labels[2] == res.labels[3] and res.labels[4] == res.labels[5]
    assert len(set(res.labels[:6])) == 4


def test_config_rejects_bad_shapes():
    with pytest.raises(ConfigError):
        VctConfig(width=130, heads=4)
    with pytest.raises(ConfigError):
        VctConfig(threshold_views=1)


def test_vct_is_a_method_whose_config_keys_only_its_own_clusters_stage():
    from vcn.config import PipelineConfig

    cfg = PipelineConfig.from_dict({"cluster": {"method": "vct", "vct": {"min_steps": 10, "max_steps": 10}}})
    assert cfg.stages() == ("tracks", "clusters")
    assert cfg.cluster.vct.steps(500) == 10
    assert cfg.stage_config("clusters")["cluster"]["vct"]["max_steps"] == 10
    hac = PipelineConfig.from_dict({"cluster": {"method": "hac"}})
    assert "vct" not in hac.stage_config("clusters")["cluster"]
