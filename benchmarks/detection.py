"""Face detection coverage vs speed, plus embedding, alignment and decode costs.

Reproduces the tables of docs/detection.md:

    .venv/bin/python benchmarks/detection.py VIDEO FACES_CSV [--settings 640,960,640+2x2]
        [--thresholds 0.3,0.4,0.5] [--strides 5,10,15,20] [--costs] [--quality]
    .venv/bin/python benchmarks/detection.py --sets leads-hard-s101 guests-hard-s101 ...
        --settings y960,960,960/z --heights 24,32,48,64,96

``--sets`` takes ``benchmarks.protocol`` set names (composed on first use), prints each set's
table, then the share found per face height over all their faces together, with the worst set.

For every frame that has ground truth, every detector setting runs on the same decoded frame
(interleaved, so background load hits all settings alike) and its time is recorded. A ground-truth
face (identity not "ignore") is found when a detection overlaps it with IoU >= 0.4 (one-to-one,
greedy by IoU). Recall is split by ground-truth box height. "extra/frame" counts detections that
overlap no ground-truth row, "ignore" rows included (unlabelled faces or false positives).
"tracks@k" is the share of ground-truth tracks (the CSV's track column, else runs of one
identity on consecutive labelled frames) with at least one found face on the frames
``frame_idx % k == 0``: the coverage left when the pipeline detects on every k-th frame only;
k must be a multiple of the labelling step (5), and it is not printed with --max-frames.

Setting names: ``960`` = the default: SCRFD on the whole frame at 960 px long side; ``y960`` =
YuNet proposals on the whole frame at 960, each confirmed by SCRFD on a zoomed crop; ``640+2x2``
= SCRFD on the whole frame at 640 plus 2x2 overlapping tiles at 640 (``640+2x2@800`` for 800 px
tiles); a ``u`` suffix on the first number (``960u``) allows upscaling a frame smaller than the
input size; a ``/z`` suffix adds the zoomed second look at its measured setting (``960/z``: floor
0.1, face 64 px, crop 3 faces wide; ``/z96x4`` sets the face height and context, ``/z96x4@0.05``
the floor too). "cpu ms" is the median over looks and "mean" the mean: the zoomed looks cost
only on looks with candidates.

--sweep-stills DIR[,DIR] adds recall by face height (16-48 px) on the photos of DIR shrunk and
pasted into frames of the video (the labelled videos have few faces under 32 px); --costs adds
single-thread embedding (batched, ms/face), alignment (ms/face) and PyAV decode
(ms/frame) costs; --quality adds, for the default DetectionConfig and QualityConfig, the share of
ground-truth faces that survive detection + the per-face quality filter, and the distribution of
each quality measure on the found faces. Times are CPU time of this process
(``time.process_time``), which other programs competing for the cores inflate far less than
wall-clock time; the wall-clock median is printed too.
"""

from __future__ import annotations

import argparse
import itertools
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

import av
import numpy as np
import pandas as pd

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from vcn.faces.boxes import box_iou
from vcn.faces.detection import DetectionConfig, FaceDetector, default_model_dir, find_models

HEIGHT_EDGES = "32,64,256"
MATCH_IOU = 0.4
ZOOM_FLOOR = 0.1  # the second look's measured floor (docs/detection.md)


def height_bins(edges: str) -> list[tuple[float, float, str]]:
    """Bins of ground-truth face height from comma-separated edges: "32,64" gives <32, 32-64, >64."""
    e = [float(v) for v in edges.split(",")]
    inner = [(lo, hi, f"{lo:g}-{hi:g}") for lo, hi in itertools.pairwise(e)]
    return [(0.0, e[0], f"<{e[0]:g}"), *inner, (e[-1], 1e9, f">{e[-1]:g}")]


def parse_setting(name: str, threshold: float) -> DetectionConfig:
    name, sep, zoom = name.partition("/z")
    head, _, tiles = name.partition("+")
    upscale = head.endswith("u")
    cfg = DetectionConfig(
        proposer="yunet" if head.startswith("y") else "scrfd",
        input_size=int(head.lstrip("y").rstrip("u")), max_upscale=4.0 if upscale else 1.0,
        score_threshold=threshold,
    )
    if sep:
        zoom, _, floor = zoom.partition("@")
        face, _, context = zoom.partition("x")
        cfg = replace(cfg, zoom_floor=float(floor or ZOOM_FLOOR), zoom_face=int(face or cfg.zoom_face),
                      zoom_context=float(context or cfg.zoom_context))
    if tiles:
        grid, _, size = tiles.partition("@")
        cols, rows = (int(v) for v in grid.split("x"))
        cfg = replace(cfg, tiles=(cols, rows), tile_size=int(size) if size else cfg.tile_size)
    return cfg


def match(gt: np.ndarray, det: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One-to-one greedy IoU matching; returns (gt index -> det index or -1, det matched mask)."""
    iou = box_iou(gt, det)
    gt_to_det = np.full(len(gt), -1)
    used = np.zeros(len(det), bool)
    for flat in np.argsort(-iou, axis=None):
        g, d = divmod(int(flat), len(det))
        if iou[g, d] < MATCH_IOU:
            break
        if gt_to_det[g] < 0 and not used[d]:
            gt_to_det[g] = d
            used[d] = True
    return gt_to_det, used


def load_gt(path: str) -> pd.DataFrame:
    gt = pd.read_csv(path)
    gt["h"] = gt.y2 - gt.y1
    if "track" not in gt.columns:
        # runs of one identity on consecutive labelled frames (the compose tool labels every 5th)
        gt = gt.sort_values(["identity", "frame_idx"]).reset_index(drop=True)
        new_run = (gt.identity != gt.identity.shift()) | (gt.frame_idx.diff() > 5)
        gt["track"] = new_run.cumsum()
    return gt.sort_values(["frame_idx", "x1"]).reset_index(drop=True)


def frames_at(video: str, wanted: set[int]):
    """Yield (frame_idx, BGR uint8 frame) for the wanted decode indices."""
    with av.open(video) as container:
        stream = container.streams.video[0]
        # one decoder thread: no background decoding may run while a detector is being timed
        stream.thread_count = 1
        last = max(wanted)
        for idx, frame in enumerate(container.decode(stream)):
            if idx in wanted:
                yield idx, frame.to_ndarray(format="bgr24")
            if idx >= last:
                break


def detection_table(args, gt: pd.DataFrame, model: str) -> dict[str, pd.DataFrame]:
    """Print the table of one video; return, per setting at the lowest threshold, each scored
    face's height and whether it was found (columns ``h``, ``found``)."""
    thresholds = sorted(float(t) for t in args.thresholds.split(","))
    settings = args.settings.split(",")
    detectors = {
        s: FaceDetector(model, parse_setting(s, thresholds[0]), threads=args.threads) for s in settings
    }
    frames = sorted(set(gt.frame_idx))
    if args.max_frames:
        frames = frames[:: max(1, len(frames) // args.max_frames)][: args.max_frames]
    found: dict[tuple[str, float], list[np.ndarray]] = {}
    extra = {key: 0 for key in ((s, t) for s in settings for t in thresholds)}
    times: dict[str, list[float]] = {s: [] for s in settings}
    cpu: dict[str, list[float]] = {s: [] for s in settings}
    shape = None
    for idx, frame in frames_at(args.video, set(frames)):
        shape = frame.shape
        rows = gt[gt.frame_idx == idx]
        scored = (rows.identity != "ignore").to_numpy()
        gt_boxes = rows[["x1", "y1", "x2", "y2"]].to_numpy(float)
        for s, det in detectors.items():
            t0, c0 = time.perf_counter(), time.process_time()
            dets = det.detect(frame)
            times[s].append(time.perf_counter() - t0)
            cpu[s].append(time.process_time() - c0)
            for t in thresholds:
                d = dets.select(dets.scores >= t)
                g2d, used = match(gt_boxes, d.boxes.astype(float))
                found.setdefault((s, t), []).append(np.stack([rows.index.to_numpy(), g2d >= 0], 1)[scored])
                extra[(s, t)] += int((~used).sum())
    n_frames = len(times[settings[0]])
    print(f"\n{os.path.basename(args.video)} {shape[1]}x{shape[0]}: {n_frames} labelled frames, "
          f"{int((gt.identity != 'ignore').sum())} scored faces; threads={args.threads}")
    strides = [int(k) for k in args.strides.split(",")] if args.strides else []
    bins = height_bins(args.heights)
    scored_all = gt[gt.identity != "ignore"]
    counts = [(name, int(((scored_all.h >= lo) & (scored_all.h < hi)).sum())) for lo, hi, name in bins]
    header = (f"{'setting':<16}{'thr':>5}{'cpu ms':>8}{'mean':>7}{'wall ms':>8}{'recall':>8}"
              + "".join(f"{name + ' (n=' + str(n) + ')':>15}" for name, n in counts)
              + f"{'extra/frame':>12}"
              + "".join(f"{'tracks@' + str(k):>10}" for k in (strides if not args.max_frames else ())))
    print(header)
    for s in settings:
        ms = 1000 * float(np.median(times[s]))
        cpu_ms = 1000 * float(np.median(cpu[s]))
        cpu_mean = 1000 * float(np.mean(cpu[s]))
        for t in thresholds:
            hits = np.concatenate(found[(s, t)])
            hit = pd.Series(hits[:, 1].astype(bool), index=hits[:, 0])
            scored_gt = gt.loc[hit.index]
            line = f"{s:<16}{t:>5.2f}{cpu_ms:>8.1f}{cpu_mean:>7.1f}{ms:>8.1f}{hit.mean():>8.3f}"
            for lo, hi, _ in bins:
                sel = ((scored_gt.h >= lo) & (scored_gt.h < hi)).to_numpy()
                line += f"{hit[sel].mean() if sel.any() else float('nan'):>15.3f}"
            line += f"{extra[(s, t)] / n_frames:>12.2f}"
            for k in strides if not args.max_frames else ():
                on_grid = (scored_gt.frame_idx % k == 0).to_numpy()
                per_track = pd.Series(hit.to_numpy() & on_grid).groupby(scored_gt.track.to_numpy()).any()
                line += f"{per_track.mean():>10.3f}"
            print(line)
    t = thresholds[0]
    out = {}
    for s in settings:
        hits = np.concatenate(found[(s, t)])
        out[s] = pd.DataFrame({"h": gt.loc[hits[:, 0], "h"].to_numpy(), "found": hits[:, 1].astype(bool),
                               "extra": extra[(s, t)] / n_frames, "cpu_ms": 1000 * float(np.mean(cpu[s]))})
    return out


def pooled_table(per_set: dict[str, dict[str, pd.DataFrame]], edges: str, over: float) -> None:
    """Share found by face height over all sets' faces together, and the worst set per bin; the
    last column is every face taller than ``over`` px."""
    bins = height_bins(edges)
    settings = next(iter(per_set.values())).keys()
    print(f"\npooled over {len(per_set)} sets (worst set in brackets)")
    print(f"{'setting':<16}{'mean cpu ms':>12}" + "".join(f"{name:>7}{'':16}" for _, _, name in bins)
          + f"{'>' + format(over, 'g'):>7}{'':16}{'extra/look':>11}")
    for s in settings:
        frames = {name: tables[s] for name, tables in per_set.items()}
        every = pd.concat(frames.values())
        line = f"{s:<16}{np.mean([f.cpu_ms.iloc[0] for f in frames.values()]):>12.1f}"
        ranges = [(lo, hi) for lo, hi, _ in bins] + [(over, 1e9)]
        for lo, hi in ranges:
            def share(f: pd.DataFrame, lo=lo, hi=hi) -> float:
                sel = (f.h >= lo) & (f.h < hi)
                return f.found[sel].mean() if sel.any() else float("nan")

            per = {name: share(f) for name, f in frames.items()}
            worst = min((v, name) for name, v in per.items() if not np.isnan(v))
            line += f"{share(every):>7.3f} " + f"({worst[0]:.2f} {worst[1].replace('-hard', '')})".ljust(16)
        line += f"{np.mean([f.extra.iloc[0] for f in frames.values()]):>11.2f}"
        print(line)


def costs(args, model_files) -> None:
    from vcn.faces.embedding import ARCFACE_TEMPLATE, EmbeddingConfig, FaceEmbedder, align_faces

    detector = FaceDetector(model_files.detector, DetectionConfig(), threads=args.threads)
    embedder = FaceEmbedder(model_files.recognizer, EmbeddingConfig(), threads=args.threads)
    crops, t_align, n_align = [], 0.0, 0
    align_faces(np.zeros((128, 128, 3), np.uint8), ARCFACE_TEMPLATE[None])  # one-off LAPACK/OpenCV set-up
    for _, frame in frames_at(args.video, set(range(0, 600, 10))):
        dets = detector.detect(frame)
        if len(dets):
            # timed on the frame's first warp, as in the pipeline: a repeat costs a third (cache)
            c0 = time.process_time()
            crops.append(align_faces(frame, dets.landmarks))
            t_align += time.process_time() - c0
            n_align += len(dets)
    crops = np.concatenate(crops) if crops else np.zeros((0, 112, 112, 3), np.uint8)
    batch = np.resize(crops, (64, 112, 112, 3)) if len(crops) else np.zeros((64, 112, 112, 3), np.uint8)
    embedder.embed(batch[:8])
    print(f"\ncosts (CPU ms, threads={args.threads}):")
    for size in (1, 8, 64):
        runs = []
        for _ in range(3):
            c0 = time.process_time()
            for _ in range(64 // size):
                embedder.embed(batch[:size])
            runs.append((time.process_time() - c0) / 64)
        print(f"  embedding w600k_mbf, batch {size:>3}: {1000 * min(runs):6.2f} ms/face (best of 3)")
    print(f"  alignment (5-point similarity warp to 112x112): {1000 * t_align / max(n_align, 1):.3f} ms/face "
          f"over {n_align} faces")
    with av.open(args.video) as container:
        stream = container.streams.video[0]
        stream.thread_count = 1
        c0, n = time.process_time(), 0
        for frame in container.decode(stream):
            frame.to_ndarray(format="bgr24")
            n += 1
            if n == 200:
                break
    print(f"  decode (PyAV, 1 thread, to BGR ndarray): {1000 * (time.process_time() - c0) / n:.2f} ms/frame")


def quality_check(args, gt: pd.DataFrame, model_files) -> None:
    from vcn.faces.embedding import align_faces
    from vcn.faces.quality import QualityConfig, keep_mask, measure

    qcfg = QualityConfig()
    detector = FaceDetector(model_files.detector, DetectionConfig(), threads=args.threads)
    rows_out, all_measures = [], []
    for idx, frame in frames_at(args.video, set(gt.frame_idx)):
        rows = gt[gt.frame_idx == idx]
        dets = detector.detect(frame)
        crops = align_faces(frame, dets.landmarks)
        keep = keep_mask(dets, crops, qcfg)
        m = measure(dets, crops)
        all_measures.append(np.stack([m.face_px, m.score, m.sharpness, np.abs(m.yaw)], 1))
        g2d, _ = match(rows[["x1", "y1", "x2", "y2"]].to_numpy(float), dets.boxes.astype(float))
        for (_, r), d in zip(rows.iterrows(), g2d, strict=True):
            rec = {"identity": r.identity, "h": r.h, "found": d >= 0, "kept": bool(d >= 0 and keep[d])}
            if d >= 0:
                rec.update(face_px=m.face_px[d], score=m.score[d], sharpness=m.sharpness[d], yaw=m.yaw[d])
            rows_out.append(rec)
    df = pd.DataFrame(rows_out)
    scored = df[df.identity != "ignore"]
    print(f"\nquality filter on {os.path.basename(args.video)} with {qcfg}")
    print(f"scored faces {len(scored)}: found {scored.found.mean():.3f}, "
          f"kept after filter {scored.kept.mean():.3f} "
          f"(dropped by filter: {int((scored.found & ~scored.kept).sum())})")
    ign = df[df.identity == "ignore"]
    if len(ign):
        print(f"'ignore' faces {len(ign)}: found {ign.found.mean():.3f}, kept {ign.kept.mean():.3f}")
    for col in ("face_px", "score", "sharpness", "yaw"):
        for name, part in (("scored", scored), ("ignore", ign)):
            vals = part[col].dropna().abs() if col == "yaw" else part[col].dropna()
            if len(vals):
                q = np.percentile(vals, [0, 5, 25, 50, 95]).round(3).tolist()
                print(f"  {col + (' |abs|' if col == 'yaw' else ''):<14}{name:<7} min/p5/p25/p50/p95 {q}")
    every = np.concatenate(all_measures)
    fails = {"size": every[:, 0] < qcfg.min_face_px, "score": every[:, 1] < qcfg.min_score,
             "sharpness": every[:, 2] < qcfg.min_sharpness, "yaw": every[:, 3] > qcfg.max_yaw}
    print(f"all {len(every)} detections on labelled frames: filter drops "
          f"{int(np.any(list(fails.values()), axis=0).sum())} ("
          + ", ".join(f"{k} {int(v.sum())}" for k, v in fails.items()) + ")")
    dropped = scored[scored.found & ~scored.kept]
    if len(dropped):
        print("  dropped scored faces:\n" + dropped.to_string(index=False, float_format=lambda v: f"{v:.3f}"))


def small_face_sweep(args, model: str) -> None:
    """Recall by face height on photos pasted, shrunk, into frames of the video.

    Each photo's largest face (found at native size) is shrunk with INTER_AREA to each target
    height and pasted with its surroundings (twice the face box) into a 3x2 grid of places on a
    frame of the video; a pasted face is found when a detection overlaps its box with IoU >= 0.4.
    """
    import glob

    import cv2

    settings = args.settings.split(",")
    threshold = min(float(t) for t in args.thresholds.split(","))
    detectors = {s: FaceDetector(model, parse_setting(s, threshold), threads=args.threads) for s in settings}
    probe = FaceDetector(model, DetectionConfig(proposer="scrfd", input_size=640, max_upscale=4.0))
    faces = []
    paths = sorted(p for folder in args.sweep_stills.split(",")
                   for p in glob.glob(os.path.join(folder, "**", "*.*"), recursive=True)
                   if p.lower().endswith((".jpg", ".jpeg", ".png")))
    for path in paths:
        image = cv2.imread(path)
        dets = probe.detect(image) if image is not None else []
        if len(dets) == 0:
            continue
        heights = dets.boxes[:, 3] - dets.boxes[:, 1]
        box = dets.boxes[np.argmax(heights)]
        if box[3] - box[1] >= 60:
            faces.append((image, box))
        if len(faces) == args.sweep_max:
            break
    backgrounds = [f for _, f in frames_at(args.video, set(range(0, 2000, 97)))]
    sizes = [int(h) for h in args.sweep_heights.split(",")]
    found = {(s, h): [] for s in settings for h in sizes}
    rng = np.random.default_rng(0)
    for h in sizes:
        for start in range(0, len(faces), 6):
            frame = backgrounds[(start // 6 + h) % len(backgrounds)].copy()
            fh, fw = frame.shape[:2]
            truth = []
            for slot, (image, box) in enumerate(faces[start : start + 6]):
                scale = h / (box[3] - box[1])
                small = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
                b = box * scale
                cx, cy = (b[0] + b[2]) / 2, (b[1] + b[3]) / 2
                half = int(h * args.sweep_context)
                x0, y0 = int(max(0, cx - half)), int(max(0, cy - half))
                patch = small[y0 : int(cy + half), x0 : int(cx + half)]
                px = int((slot % 3 + 0.5) * fw / 3 + rng.uniform(-0.15, 0.15) * fw / 3 - patch.shape[1] / 2)
                py = int((slot // 3 + 0.5) * fh / 2 + rng.uniform(-0.15, 0.15) * fh / 2 - patch.shape[0] / 2)
                frame[py : py + patch.shape[0], px : px + patch.shape[1]] = patch
                truth.append(b - np.array([x0, y0, x0, y0]) + np.array([px, py, px, py]))
            for s, det in detectors.items():
                g2d, _ = match(np.array(truth, float), det.detect(frame).boxes.astype(float))
                found[(s, h)].extend(g2d >= 0)
    print(f"\nsmall-face sweep: {len(faces)} faces from {args.sweep_stills} pasted into "
          f"{backgrounds[0].shape[1]}x{backgrounds[0].shape[0]} frames of {os.path.basename(args.video)}, "
          f"threshold {threshold}")
    print(f"{'setting':<14}" + "".join(f"{str(h) + ' px':>9}" for h in sizes))
    for s in settings:
        print(f"{s:<14}" + "".join(f"{np.mean(found[(s, h)]):>9.3f}" for h in sizes))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("video", nargs="?")
    p.add_argument("faces_csv", nargs="?")
    p.add_argument("--sets", nargs="+", default=None,
                   help="protocol sets (benchmarks.protocol names, composed into --cache on first use) "
                   "instead of VIDEO FACES_CSV; prints each set's table and the pooled shares")
    p.add_argument("--cache", default=".bench/proto")
    p.add_argument("--over", type=float, default=48.0, help="--sets: also faces over this height")
    p.add_argument("--settings", default="y960,640,800,960,1280,640+2x1,640+2x2")
    p.add_argument("--thresholds", default="0.5")
    p.add_argument("--strides", default="5,10,15,20")
    p.add_argument("--heights", default=HEIGHT_EDGES, help="edges of the face-height bins, in px")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--max-frames", type=int, default=0, help="evaluate on at most this many labelled frames")
    p.add_argument("--model-dir", default=None)
    p.add_argument("--costs", action="store_true")
    p.add_argument("--quality", action="store_true")
    p.add_argument("--no-table", action="store_true")
    p.add_argument("--sweep-stills", default=None,
                   help="folders of photos (comma-separated, searched recursively): also measure recall by "
                   "face height on them pasted into the video")
    p.add_argument("--sweep-heights", default="16,20,24,28,32,40,48")
    p.add_argument("--sweep-max", type=int, default=120, help="use at most this many photos")
    p.add_argument("--sweep-context", type=float, default=2.5, help="pasted patch half-size, in face heights")
    args = p.parse_args()
    import cv2

    # the pipeline runs one single-threaded worker per core; OpenCV's own thread pool would
    # otherwise add its spinning threads to the CPU time of resizes and warps
    cv2.setNumThreads(args.threads)
    model_files = find_models(args.model_dir or default_model_dir())
    if args.sets:
        from benchmarks import protocol

        per_set = {}
        for name in args.sets:
            video, csv, _ = protocol.dataset(name, Path(args.cache))
            args.video = str(video)
            per_set[name] = detection_table(args, load_gt(str(csv)), model_files.detector)
        pooled_table(per_set, args.heights, args.over)
        return
    if not args.video or not args.faces_csv:
        p.error("give VIDEO FACES_CSV, or --sets")
    gt = load_gt(args.faces_csv)
    if not args.no_table:
        detection_table(args, gt, model_files.detector)
    if args.sweep_stills:
        small_face_sweep(args, model_files.detector)
    if args.costs:
        costs(args, model_files)
    if args.quality:
        quality_check(args, gt, model_files)


if __name__ == "__main__":
    main()
