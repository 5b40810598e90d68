"""Where the recognizer itself confuses people: tracks nearer another person than their own.

    .venv/bin/python -m benchmarks.confusions [--sets hard7 hard5] [--model-dir DIR]
        [--resolution-matched] [--distill STEPS] [--dlib MODELS]

For each labelled set (names as in ``benchmarks.ablation``; stage 1 runs once through the real
flow or is reused from ``--out``), the recognizer embeds up to 8 sampled aligned crops per track
(the faces every vcn stage sees), and each track's identity is the majority ground-truth identity
of its faces. Prints:

- the ROC AUC of telling same- from different-person track pairs by the cosine distance of the
  track means (pairs of two tracks of one shot not counted), and how often a track's nearest
  other track is the same person;
- every *confused* track: one whose nearest track of another person is nearer than its nearest
  track of its own person, with its median face height in frame pixels and its SER-FIQ quality
  (and its rank in the video, 1 = worst). No clustering rule on this distance can put such a
  track with its own person before it puts it with the other one;
- Spearman's correlation of the margin (nearest other - nearest own) with face height and with
  quality over all tracks.

``--model-dir`` scores another insightface recognizer (e.g. buffalo_l's ``w600k_r50.onnx``) on
the same crops. ``--resolution-matched`` compares every pair of tracks at the smaller one's face
size (both crops shrunk to a ladder of 112/80/56/40/28 px and scaled back) as a second row.
``--distill STEPS`` adds a row for a *resolution-distilled* copy of the recognizer (a probe for
docs/method.md, not part of vcn yet): the video's sharp faces (at least 80 px high in the frame)
are shown to a trainable copy shrunk to 20-56 px, darkened and noised (``DISTILL_VIEWS``), and
it learns, by cosine distance, to give both the clean and the degraded crop the generic model's
embedding of the clean one (AdamW, learning rate 1e-4, 32 faces a step, every layer trained).
With 300 steps it helps the composed HARD episodes and over-fits the Hamilton clip's 44 sharp
faces (docs/method.md).
``--dlib MODELS`` adds a row for a recognizer of another family: dlib's ResNet (128-d, Euclidean
distance of track means), on the same sampled faces, aligned by dlib's own 5-point predictor
from the frames. It needs ``pip install dlib-bin`` and the folder holding
``dlib_face_recognition_resnet_model_v1.dat`` and ``shape_predictor_5_face_landmarks.dat``
(e.g. ``face_recognition_models/models`` of the PyPI package ``face_recognition_models``); neither
is a vcn dependency.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
from scipy.stats import spearmanr

from benchmarks.ablation import dataset, stage1
from benchmarks.finetune import auc, cosine_dist
from vcn.method.views import ViewConfig, strong_views

# Face heights (pixels) that --resolution-matched compares at; 112 is the crop itself.
_LADDER = (112, 80, 56, 40, 28)
# --distill: what a wide shot does to a sharp face (view 1; view 0 is the clean crop), and the
# frame height from which a face counts as sharp.
DISTILL_VIEWS = ViewConfig(n_views=2, scale=(0.85, 1.0), grey_p=0.0, blur_p=0.3, low_res_p=1.0,
                           dark_p=0.5, noise_p=0.5)
_SHARP_PX = 80


def track_identities(faces: pd.DataFrame, gt_csv: Path) -> dict[str, str]:
    """Majority ground-truth identity of each track id (tracks with no matched face are absent)."""
    from vcn.evaluation import metrics

    gt = metrics.read_ground_truth(pd.read_csv(gt_csv).drop(columns=["video"], errors="ignore"))
    pred = faces[["frame_idx", "x1", "y1", "x2", "y2", "track_id"]].assign(cluster_id="c")
    m = metrics.match_faces(gt, pred)
    m = m[m["matched"] & m["scored"]]
    return m.groupby("track_id")["identity"].agg(lambda s: s.value_counts().index[0]).to_dict()


def shrink(crops: np.ndarray, side: int) -> np.ndarray:
    """The crops as a face ``side`` px high would give them: shrunk, then scaled back to 112."""
    if side >= crops.shape[1]:
        return crops
    return np.stack([cv2.resize(cv2.resize(c, (side, side), interpolation=cv2.INTER_AREA),
                                c.shape[:2][::-1], interpolation=cv2.INTER_LINEAR) for c in crops])


def distilled(backbone, crops: np.ndarray, sharp: np.ndarray, steps: int, seed: int = 0):
    """A copy of ``backbone`` trained for ``steps`` steps to map the sharp crops (indices
    ``sharp`` into crops (N, 112, 112, 3)), clean and degraded, to the generic embedding of the
    clean crop."""
    import copy

    import torch
    import torch.nn.functional as F

    from vcn.faces.backbone import preprocess
    from vcn.method.view_bank import embed_crops

    torch.manual_seed(seed)
    target = torch.from_numpy(embed_crops(backbone, crops[sharp], 64, torch.device("cpu")))
    student = copy.deepcopy(backbone).train()
    opt = torch.optim.AdamW(student.parameters(), lr=1e-4, weight_decay=0.0)
    rng = np.random.default_rng(seed)
    for step in range(steps):
        b = rng.choice(len(sharp), size=min(32, len(sharp)), replace=False)
        views = strong_views(crops[sharp[b]], DISTILL_VIEWS, (seed, step))
        x = preprocess(np.concatenate([views[:, 0], views[:, 1]]), student.input_mean, student.input_std)
        out = F.normalize(student(x), dim=-1)
        loss = 2 - (out * target[b].repeat(2, 1)).sum(-1).mean() * 2
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % 50 == 0 or step == steps - 1:
            print(f"    distill step {step}: loss {loss.item():.4f}", flush=True)
    return student.eval()


def dlib_distances(video: Path, faces: pd.DataFrame, sample: np.ndarray, index: np.ndarray,
                   n: int, models: Path) -> np.ndarray:
    """(n, n) Euclidean distance of track means of dlib ResNet descriptors of the sampled faces
    (rows ``sample`` of ``faces``, of tracks ``index``), read from the frames of ``video``."""
    try:
        import dlib
    except ImportError as e:
        raise SystemExit("--dlib needs dlib: pip install dlib-bin") from e
    predictor = dlib.shape_predictor(str(models / "shape_predictor_5_face_landmarks.dat"))
    recognizer = dlib.face_recognition_model_v1(str(models / "dlib_face_recognition_resnet_model_v1.dat"))
    from vcn.media.video import iter_frames

    rows = faces.iloc[sample]
    wanted = set(rows["frame_idx"])
    frames = {i: cv2.cvtColor(f, cv2.COLOR_BGR2RGB)
              for i, f in iter_frames(video, min(wanted), max(wanted) + 1) if i in wanted}
    desc = np.empty((len(rows), 128))
    for k, r in enumerate(rows.itertuples()):
        img = frames[r.frame_idx]
        box = dlib.rectangle(int(r.x1), int(r.y1), int(r.x2), int(r.y2))
        desc[k] = recognizer.compute_face_descriptor(img, predictor(img, box), 0)
    means = np.stack([desc[index == t].mean(0) for t in range(n)])
    return np.linalg.norm(means[:, None] - means[None], axis=-1)


def report(name: str, dist: np.ndarray, ident: np.ndarray, shot: np.ndarray, height: np.ndarray,
           quality: np.ndarray) -> None:
    """Print separation figures and the confused tracks of one (T, T) track distance matrix."""
    n = len(ident)
    labelled = ident != "?"
    a, b = np.triu_indices(n, 1)
    counted = labelled[a] & labelled[b] & (shot[a] != shot[b])
    same = ident[a] == ident[b]
    d = dist[a, b]
    sel_same, sel_diff = counted & same, counted & ~same
    d_off = dist.copy()
    np.fill_diagonal(d_off, np.inf)
    nearest_same = ident[np.argmin(d_off, axis=1)] == ident
    print(f"  {name}: AUC {auc(d[sel_same], d[sel_diff]):.4f}, nearest track is the same person for "
          f"{nearest_same[labelled].mean():.3f} of tracks")
    rank = np.argsort(np.argsort(quality)) + 1
    margins = np.full(n, np.nan)
    rows = []
    for t in np.flatnonzero(labelled):
        own = (ident == ident[t]) & (np.arange(n) != t)
        other = labelled & (ident != ident[t])
        if not own.any() or not other.any():
            continue
        o = np.flatnonzero(other)[np.argmin(d_off[t, other])]
        margins[t] = d_off[t, o] - d_off[t, own].min()
        if margins[t] < 0:
            rows.append((t, ident[t], height[t], quality[t], rank[t], d_off[t, own].min(),
                         d_off[t, o], ident[o]))
    print(f"  confused tracks: {len(rows)} of {int(labelled.sum())}")
    for t, who, h, q, r, ds, do, whom in rows:
        print(f"    track {t:>3} {who:<20} face {h:>4.0f} px  quality {q:.3f} (rank {r:>2})  "
              f"own {ds:.3f}  other {do:.3f} ({whom})")
    ok = np.isfinite(margins)
    print(f"  Spearman of the margin with face height {spearmanr(margins[ok], height[ok])[0]:+.2f}, "
          f"with quality {spearmanr(margins[ok], quality[ok])[0]:+.2f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sets", nargs="+", default=["hard7", "hard5"])
    ap.add_argument("--out", default=".bench/ablation-out")
    ap.add_argument("--cache", default=".bench")
    ap.add_argument("--model-dir", default=None, help="insightface model folder (default: the shipped one)")
    ap.add_argument("--resolution-matched", action="store_true")
    ap.add_argument("--distill", type=int, default=0, metavar="STEPS",
                    help="add a row for a resolution-distilled recognizer trained STEPS steps")
    ap.add_argument("--dlib", type=Path, default=None, metavar="MODELS",
                    help="add a row for dlib's ResNet recognizer (folder of its .dat files)")
    args = ap.parse_args()

    import torch

    from vcn.faces.backbone import load_backbone
    from vcn.faces.detection import default_model_dir, find_models
    from vcn.method.matching import sample_rows
    from vcn.method.track_quality import SerFiqConfig, serfiq_scores, track_quality
    from vcn.method.videoclusternet import MethodConfig
    from vcn.method.view_bank import embed_crops
    from vcn.storage.crops import read_crops

    cfg = MethodConfig()

    def distances(crops: np.ndarray, index: np.ndarray, model=None) -> np.ndarray:
        """(T, T) cosine distance of track means under the generic recognizer (or ``model``)."""
        model = backbone if model is None else model
        return cosine_dist(embed_crops(model, crops, 64, torch.device("cpu")), index)

    backbone = load_backbone(find_models(args.model_dir or default_model_dir()).recognizer)
    for name in args.sets:
        video, csv = dataset(name, Path(args.cache))
        movie = stage1(video, Path(args.out))
        faces = pq.read_table(movie / "faces.parquet").to_pandas()
        tracks = pq.read_table(movie / "tracks.parquet").to_pandas()
        n = len(tracks)
        index_of = {t: i for i, t in enumerate(tracks["track_id"])}
        face_track = faces["track_id"].map(index_of).to_numpy()
        who = track_identities(faces, csv)
        ident = np.array([who.get(t, "?") for t in tracks["track_id"]])
        shot = tracks["shot_id"].to_numpy()
        height = (faces["y2"] - faces["y1"]).groupby(face_track).median().reindex(range(n)).to_numpy()
        sample = sample_rows(face_track, cfg.faces_per_track)
        crops = read_crops(movie / "crops", faces["face_id"].to_numpy()[sample])
        index = face_track[sample]
        quality = track_quality(serfiq_scores(backbone, crops, SerFiqConfig(), 0), index)
        print(f"\n== {name}: {n} tracks, {len(set(ident) - {'?'})} people")
        report("cosine of track means", distances(crops, index), ident, shot, height, quality)
        if args.resolution_matched:
            level = np.array([max([s for s in _LADDER if s <= h] or [_LADDER[-1]]) for h in height])
            pair_level = np.minimum(level[:, None], level[None, :])
            dist = np.empty((n, n))
            for s in _LADDER:
                at = pair_level == s
                dist[at] = distances(shrink(crops, s), index)[at]
            report("resolution-matched", dist, ident, shot, height, quality)
        if args.distill:
            sharp = np.flatnonzero((faces["y2"] - faces["y1"]).to_numpy()[sample] >= _SHARP_PX)
            print(f"  resolution distillation on {len(sharp)} sharp faces of {len(sample)}", flush=True)
            student = distilled(backbone, crops, sharp, args.distill)
            report("resolution-distilled", distances(crops, index, student), ident, shot, height, quality)
        if args.dlib:
            report("dlib ResNet, Euclidean of track means",
                   dlib_distances(video, faces, sample, index, n, args.dlib), ident, shot, height, quality)


if __name__ == "__main__":
    main()
