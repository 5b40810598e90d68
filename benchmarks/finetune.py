"""Cost of the self-supervised finetune, and whether it separates identities better.

    .venv/bin/python benchmarks/finetune.py [--crops FACES.npz] [--tracks 300 --faces 20]
        [--device both|cpu|cuda|auto] [--steps-scale 1.0] [--no-eval] [--matches coarse|none]
        [--threads N]

FACES.npz holds ``crops`` uint8 (N, 112, 112, 3) BGR aligned faces, ``track`` int (N,) and,
optionally, ``identity`` (N,) strings (ground truth, for the separation figures). Without
--crops the tracks are synthesised from the 45 real faces of tests/data/h5_faces.jpg, each face
of a track a differently flipped/rotated/tinted copy of one photo (fine for timing only).

Prints, for the CPU and (default ``--device both``) for CUDA when available: wall and CPU
time of ``finetune`` with the default FinetuneConfig (steps scale with the number of tracks), and
of ``face_outputs`` on every crop, both also per 1,000 tracks / faces; the peak RSS during the
finetune, its growth and the part of it that grows with the tracks (the feature cache), or the peak
CUDA memory. With identities, also the separation of identities by track, before (the ONNX model)
and after (teacher embeddings; DINO loss distance): mean distance between tracks of one identity
/ mean distance between tracks of two identities (lower is better; tracks cut from one shot are
not counted as same-identity pairs), and the ROC AUC of telling same from different identity
pairs. Matches come from ``vcn.matching.coarse_matches`` on the ONNX embeddings (precision
printed). CPU times (``time.process_time``) are printed besides wall-clock times because other
programs competing for the cores inflate the latter.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from dataclasses import replace

import cv2
import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from vcn.augment import AugmentConfig, augment
from vcn.backbone import load_backbone, preprocess
from vcn.detection import default_model_dir, find_models
from vcn.finetune import FaceOutputs, FinetuneConfig, face_outputs, finetune

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def synthetic_tracks(n_tracks: int, faces: int, seed: int) -> tuple[np.ndarray, np.ndarray, None]:
    """n_tracks x faces augmented copies of the test faces (one photo per track)."""
    mosaic = cv2.imread(os.path.join(ROOT, "tests", "data", "h5_faces.jpg"))
    tiles = np.stack(
        [
            mosaic[r : r + 112, c : c + 112]
            for r in range(0, mosaic.shape[0], 112)
            for c in range(0, mosaic.shape[1], 112)
        ]
    )[:45]
    gen = torch.Generator().manual_seed(seed)
    crops = []
    for t in range(n_tracks):
        x = preprocess(np.repeat(tiles[t % len(tiles)][None], faces, 0))
        y = augment(x, AugmentConfig(), gen) * 127.5 + 127.5
        crops.append(y.clamp(0, 255).round().byte().permute(0, 2, 3, 1).numpy()[..., ::-1])
    return np.ascontiguousarray(np.concatenate(crops)), np.repeat(np.arange(n_tracks), faces), None


def onnx_embeddings(model_path: str, crops: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    sess = ort.InferenceSession(model_path, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    out = [
        sess.run(None, {name: preprocess(crops[i : i + 128]).numpy()})[0] for i in range(0, len(crops), 128)
    ]
    e = np.concatenate(out)
    return e / np.linalg.norm(e, axis=1, keepdims=True)


def track_pairs(track: np.ndarray, identity: np.ndarray, shot: np.ndarray | None):
    """Upper-triangle track pairs (a, b), same-identity flag, and a mask of the pairs counted."""
    n = int(track.max()) + 1
    first = np.array([np.flatnonzero(track == t)[0] for t in range(n)])
    tid, tshot = identity[first], (shot[first] if shot is not None else np.arange(n))
    a, b = np.triu_indices(n, 1)
    same = tid[a] == tid[b]
    counted = (tshot[a] != tshot[b]) & (tid[a] != "ignore") & (tid[b] != "ignore")
    return a[counted], b[counted], same[counted]


def auc(scores_same: np.ndarray, scores_diff: np.ndarray) -> float:
    """P(distance of a same-identity pair < distance of a different-identity pair)."""
    allv = np.concatenate([scores_same, scores_diff])
    ranks = np.argsort(np.argsort(allv, kind="stable"), kind="stable") + 1.0
    r_same = ranks[: len(scores_same)].sum()
    n1, n0 = len(scores_same), len(scores_diff)
    return float(1.0 - (r_same - n1 * (n1 + 1) / 2) / (n1 * n0))


def separation(dist: np.ndarray, a, b, same) -> str:
    d = dist[a, b]
    return (
        f"same/diff distance ratio {d[same].mean() / d[~same].mean():.3f}  AUC {auc(d[same], d[~same]):.3f}"
    )


def means(x: np.ndarray, track: np.ndarray) -> np.ndarray:
    n = int(track.max()) + 1
    out = np.zeros((n, x.shape[1]), np.float64)
    np.add.at(out, track, x)
    return out / np.bincount(track, minlength=n)[:, None]


def cosine_dist(emb: np.ndarray, track: np.ndarray) -> np.ndarray:
    m = means(emb, track)
    m /= np.linalg.norm(m, axis=1, keepdims=True)
    return 1.0 - m @ m.T


def loss_dist(out: FaceOutputs, track: np.ndarray) -> np.ndarray:
    p, s = means(out.teacher_probs, track), means(out.student_logprobs, track)
    cross = -(p @ s.T)
    return (cross + cross.T) / 2


class PeakRss:
    """Samples this process's resident set size every 50 ms; ``peak`` in MiB."""

    def __init__(self) -> None:
        self.peak = self.current()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @staticmethod
    def current() -> float:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            self.peak = max(self.peak, self.current())

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def scaled_config(cfg: FinetuneConfig, scale: float) -> FinetuneConfig:
    """The default budget with every step count multiplied by ``scale``."""
    return replace(
        cfg,
        min_steps=int(cfg.min_steps * scale),
        max_steps=int(cfg.max_steps * scale),
        head_steps_per_track=cfg.head_steps_per_track * scale,
        joint_steps_per_track=cfg.joint_steps_per_track * scale,
    )


def timed_finetune(backbone, crops, track, matches, cfg: FinetuneConfig, seed: int, n_tracks: int):
    """Run ``finetune`` once and print its cost; returns the state."""
    cuda = cfg.device == "cuda" or (cfg.device == "auto" and torch.cuda.is_available())
    steps = cfg.stage_steps(n_tracks)
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    rss0 = PeakRss.current()
    with PeakRss() as rss:
        w, c = time.perf_counter(), time.process_time()
        state = finetune(backbone, crops, track, matches, cfg, seed=seed)
        if cuda:
            torch.cuda.synchronize()
        wall, cpu = time.perf_counter() - w, time.process_time() - c
    k = 1000.0 / n_tracks
    print(
        f"finetune on {'cuda' if cuda else 'cpu'}: steps head {steps[0]} + joint {steps[1]}, "
        f"batch {cfg.batch_pairs} pairs, {min(cfg.faces_per_track, len(crops) // n_tracks)} faces/track "
        f"x {cfg.cached_views} views cached"
    )
    print(
        f"  wall {wall:.1f} s, cpu {cpu:.1f} s  ->  per 1,000 tracks: "
        f"wall {wall * k:.0f} s, cpu {cpu * k:.0f} s"
    )
    print(
        f"  loss first 20 steps {np.mean(state.losses[:20]):.3f} -> last 20 {np.mean(state.losses[-20:]):.3f}"
    )
    if cuda:
        print(f"  peak CUDA memory {torch.cuda.max_memory_allocated() / 2**20:.0f} MiB")
    # What grows with the tracks is the feature cache: per cached face view, the trunk output
    # (float16) and the frozen embedding (float32); the rest is models, optimizer and one batch.
    per_view = 2 * int(np.prod(backbone.run(torch.zeros(1, 3, 112, 112), stop=state.cut).shape)) + 4 * 512
    cache = 1000 * cfg.faces_per_track * cfg.cached_views * per_view / 2**20
    print(
        f"  peak RSS during finetune {rss.peak:.0f} MiB (inputs and models before it {rss0:.0f} MiB; "
        f"growth {rss.peak - rss0:.0f} MiB, of which the feature cache grows by {cache:.0f} MiB "
        "per 1,000 tracks)"
    )
    return state


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--crops", help="npz with crops, track[, identity, shot]")
    ap.add_argument("--tracks", type=int, default=300)
    ap.add_argument("--faces", type=int, default=20)
    ap.add_argument(
        "--device",
        default="both",
        choices=["both", "auto", "cpu", "cuda"],
        help="both: the CPU, then CUDA when available (face_outputs uses the last)",
    )
    ap.add_argument("--steps-scale", type=float, default=1.0, help="multiply the default step budget")
    ap.add_argument("--matches", default="coarse", choices=["coarse", "none"])
    ap.add_argument("--no-eval", action="store_true", help="skip face_outputs and the separation figures")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    args = ap.parse_args()

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.crops:
        z = np.load(args.crops)
        crops, track = z["crops"], z["track"].astype(np.int64)
        identity = z["identity"].astype(str) if "identity" in z else None
        shot = z["shot"].astype(str) if "shot" in z else None
    else:
        crops, track, identity = synthetic_tracks(args.tracks, args.faces, args.seed)
        shot = None
    n_tracks = len(np.unique(track))
    model = find_models(default_model_dir()).recognizer
    print(
        f"{len(crops)} crops, {n_tracks} tracks, torch {torch.__version__}, threads {torch.get_num_threads()}"
    )

    need_base = args.matches == "coarse" or (identity is not None and not args.no_eval)
    base_emb = onnx_embeddings(model, crops) if need_base else None
    matches = np.zeros((0, 2), np.int64)
    if args.matches == "coarse":
        from vcn.matching import coarse_matches

        matches = coarse_matches(base_emb, track)
        msg = f"{len(matches)} coarse matches"
        if identity is not None:
            first = np.array([np.flatnonzero(track == t)[0] for t in range(int(track.max()) + 1)])
            ok = identity[first][matches[:, 0]] == identity[first][matches[:, 1]]
            msg += f", precision {ok.mean() if len(ok) else float('nan'):.3f}"
        print(msg)

    backbone = load_backbone(model)
    devices = (
        [args.device] if args.device != "both" else ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    )
    if args.device == "both" and len(devices) == 1:
        print("(no CUDA device: CPU only)")
    state, cfg = None, FinetuneConfig()
    for device in devices:
        cfg = scaled_config(FinetuneConfig(device=device), args.steps_scale)
        state = timed_finetune(backbone, crops, track, matches, cfg, args.seed, n_tracks)
    if args.no_eval:
        return
    w, c = time.perf_counter(), time.process_time()
    out = face_outputs(backbone, state, crops, cfg)
    wall, cpu = time.perf_counter() - w, time.process_time() - c
    print(
        f"face_outputs: wall {wall:.1f} s, cpu {cpu:.1f} s -> "
        f"per 1,000 faces wall {wall * 1000 / len(crops):.1f} s, "
        f"cpu {cpu * 1000 / len(crops):.1f} s"
    )
    if identity is None:
        return
    a, b, same = track_pairs(track, identity, shot)
    print(f"{same.sum()} same-identity and {(~same).sum()} different-identity track pairs")
    print(f"  before, ONNX cosine:        {separation(cosine_dist(base_emb, track), a, b, same)}")
    print(f"  after, teacher cosine:      {separation(cosine_dist(out.embeddings, track), a, b, same)}")
    print(f"  after, DINO loss distance:  {separation(loss_dist(out, track), a, b, same)}")


if __name__ == "__main__":
    main()
