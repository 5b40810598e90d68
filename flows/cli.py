"""The ``vcn`` command line: ``run`` videos through the per-movie flow, ``eval`` a result.

The CLI turns flags into config dataclasses and calls flows; it holds no pipeline logic.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import traceback
from pathlib import Path

from vcn.errors import VcnError
from vcn.method.registry import METHODS, cli_help

EPILOG = """\
examples:
  vcn run movie.mp4 --out out/                 # cluster the faces of one video
  vcn run a.mp4 b.mkv --out out/ --workers 2   # several videos, 2 Dask workers
  vcn eval --gt movie.faces.csv --pred out/<movie_id>
  vcn ingest /media/library --out out/ --dry-run   # what a library run would redo, and why
  vcn identities out/                          # link the titles' clusters into library identities
  vcn label out/ id_00003 "Ada Lovelace"       # review: label, merge, split, reject (README)

outputs (per video, under OUT/<movie_id>/): faces.parquet, tracks.parquet, shots.parquet,
clusters.parquet, crops/, manifest.json. See README.md, "Output contract".
"""


def _load_config(text: str | None) -> dict:
    if not text:
        return {}
    inline = text.lstrip().startswith("{")  # a long inline object is no file name to stat
    try:
        return json.loads(text if inline or not Path(text).exists() else Path(text).read_text())
    except json.JSONDecodeError as exc:
        raise VcnError(f"--config {text!r}: not a JSON file or JSON object ({exc})") from exc


def _merge(base: dict, extra: dict) -> dict:
    out = dict(base)
    for k, v in extra.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _config_overrides(args: argparse.Namespace) -> dict:
    cfg: dict = {"ingest": {}, "cluster": {}}
    if args.method:
        cfg["cluster"]["method"] = args.method
    if args.stride:
        cfg["ingest"]["stride"] = args.stride
    if args.chunk_seconds:
        cfg["ingest"]["chunk"] = {"chunk_seconds": args.chunk_seconds}
    if args.model_dir:
        cfg["model_dir"] = str(Path(args.model_dir).resolve())
    flags = {k: v for k, v in cfg.items() if v != {}}
    return _merge(_load_config(getattr(args, "config", None)), flags)


def cmd_run(args: argparse.Namespace) -> int:
    from vcn.config import PipelineConfig
    from vcn.flows.movie import movie_flow
    from vcn.flows.runtime import dask_cluster, gpu_workers, model_threads, prefect_api

    overrides = _config_overrides(args)
    PipelineConfig.from_dict(overrides)  # fail fast on a bad flag, before any server starts
    out = str(Path(args.out).resolve())
    results: list[dict] = []
    failed: list[tuple[str, str]] = []
    with prefect_api() as api, dask_cluster(args.dask_address, args.workers) as address:
        gpu = gpu_workers(address)
        print(f"vcn: Prefect API {api}; Dask scheduler {address}{' (GPU workers)' if gpu else ''}",
              file=sys.stderr)
        # The videos run one at a time, so each finetune and clustering may use all the local cores.
        threads = model_threads(args.dask_address, 1)
        for video in args.videos:
            t0 = time.perf_counter()
            try:
                summary = movie_flow(address)(video_path=video, out_dir=out, config=overrides, gpu=gpu,
                                              threads=threads)
            except Exception as exc:  # a broken title must not stop the batch
                failed.append((video, failure_line(video, exc)))
                print(f"vcn: FAILED {failed[-1][1]}", file=sys.stderr)
                continue
            summary["seconds"] = round(time.perf_counter() - t0, 2)
            results.append(summary)
    print(format_summary(results, failed))
    if args.json:
        Path(args.json).write_text(json.dumps({"ok": results, "failed": dict(failed)}, indent=2, default=str))
    return 1 if failed else 0


def cmd_ingest(args: argparse.Namespace) -> int:
    from vcn.config import PipelineConfig
    from vcn.flows.library import ingest_library
    from vcn.flows.runtime import prefect_api
    from vcn.tasks.library import LibrarySummary, format_summary

    if not args.library_root and not args.catalogue:
        raise VcnError("vcn ingest needs LIBRARY_ROOT (a folder of videos) or --catalogue FILE.csv|.parquet")
    overrides = _config_overrides(args)
    cfg = PipelineConfig.from_dict(overrides)  # fail fast on a bad flag, before any server starts
    root, catalogue = (str(Path(p).resolve()) if p else None for p in (args.library_root, args.catalogue))
    if args.dry_run:
        from vcn.tasks.library import format_plan, plan_titles

        print(format_plan(plan_titles(root, catalogue, str(Path(args.out).resolve()), cfg)))
        return 0
    with prefect_api() as api:
        print(f"vcn: Prefect API {api}", file=sys.stderr)
        state = ingest_library(
            out_dir=str(Path(args.out).resolve()), library_root=root, catalogue=catalogue, config=overrides,
            concurrency=args.concurrency, workers=args.workers, dask_address=args.dask_address,
            return_state=True,
        )
        result = state.result(raise_on_failure=False)
    if isinstance(result, BaseException):  # the flow itself broke (bad root, bad catalogue, ...)
        raise result
    print(format_summary(LibrarySummary(**result)))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2, default=str))
    return 1 if result["failed"] else 0


def cmd_rerun(args: argparse.Namespace) -> int:
    from vcn.flows.movie import movie_flow
    from vcn.flows.runtime import dask_cluster, gpu_workers, model_threads, prefect_api
    from vcn.storage.layout import MovieLayout
    from vcn.storage.manifest import read_manifest

    movie_dir = Path(args.movie_dir).resolve()
    layout = MovieLayout(movie_dir)
    manifest_path = layout.manifest
    if not manifest_path.exists():
        raise VcnError(f"{manifest_path}: no manifest; pass a folder OUT/<movie_id> made by `vcn run`")
    manifest = read_manifest(layout)
    video = manifest.input_path
    if not video:
        raise VcnError(f"{manifest_path}: records no input file; run "
                       f"`vcn run VIDEO --out {movie_dir.parent}`"
                       " instead")
    with prefect_api(), dask_cluster(args.dask_address, args.workers) as address:
        summary = movie_flow(address)(
            video_path=video, out_dir=str(movie_dir.parent), config=manifest.config or {},
            rerun_from=args.from_stage, gpu=gpu_workers(address), threads=model_threads(args.dask_address, 1),
        )
    ran = [s for s, run in summary.get("stages_run", {}).items() if run]
    print(f"vcn: re-ran {', '.join(ran) or 'nothing (all stages complete)'} for {video}")
    return 0


def cmd_identities(args: argparse.Namespace) -> int:
    from vcn.tasks.identities import format_identities, update_identities

    print(format_identities(update_identities(str(Path(args.library_out).resolve()), rebuild=args.rebuild)))
    return 0


def cmd_review(args: argparse.Namespace) -> int:
    from vcn.tasks import review

    out, user = args.library_out, args.user
    if args.command == "label":
        result = review.label(out, args.targets, args.name, user=user)
    elif args.command == "merge":
        result = review.merge(out, *args.targets, user=user)
    elif args.command == "split":
        result = review.split(out, *args.targets, off=args.off, user=user)
    else:
        result = review.reject(out, *args.targets, user=user)
    print(review.format_review(result))
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from vcn.tasks.report import build_report

    print(build_report(str(Path(args.movie_dir).resolve())))
    return 0


def failure_line(video: str, exc: BaseException) -> str:
    """One line on why ``video`` failed. vcn's errors name the file, what is wrong and the fix, so
    their message is the line; any other error (a bug) is named by its type, after the path."""
    text = str(exc) if isinstance(exc, VcnError) else f"{type(exc).__name__}: {exc}"
    text = " / ".join(line.strip() for line in text.splitlines() if line.strip())
    return text if Path(video).name in text else f"{video}: {text}"


def format_summary(results: list[dict], failed: list[tuple[str, str]]) -> str:
    """A human-readable summary of a batch."""
    lines = ["", f"vcn: {len(results)} video(s) done, {len(failed)} failed"]
    for r in results:
        rt = r["duration_s"] / r["seconds"] if r.get("seconds") else float("nan")
        lines.append(
            f"  {Path(r['video']).name}: {r['faces']} faces, {r['tracks']} tracks, {r['shots']} shots, "
            f"{r['clusters']} clusters ({r['unknown_tracks']} unknown tracks) in {r['seconds']:.1f} s "
            f"({rt:.2f}x real time)\n    output: {r['output']}"
        )
    for _, why in failed:
        lines.append(f"  FAILED {why}")
    return "\n".join(lines)


def cmd_eval(args: argparse.Namespace) -> int:
    import pandas as pd
    import pyarrow.parquet as pq

    from vcn.evaluation.metrics import evaluate, format_report, read_ground_truth
    from vcn.storage.layout import MovieLayout
    from vcn.storage.manifest import read_manifest

    pred_dir = Path(args.pred)
    faces_path = pred_dir / "faces.parquet"
    if not faces_path.exists():
        raise VcnError(f"{faces_path}: no faces.parquet; pass --pred OUT/<movie_id> of a finished `vcn run`")
    try:
        gt = pd.read_csv(args.gt)
    except (OSError, pd.errors.ParserError) as exc:
        raise VcnError(f"{args.gt}: cannot read the ground-truth CSV ({exc})") from exc
    gt = read_ground_truth(gt)
    layout = MovieLayout(pred_dir)
    if "video" in gt.columns and layout.manifest.exists():
        name = Path(read_manifest(layout).input_path or "").name
        if (gt["video"] == name).any():
            gt = gt[gt["video"] == name]
    pred = pq.read_table(faces_path, columns=["frame_idx", "x1", "y1", "x2", "y2", "track_id", "cluster_id"])
    report = evaluate(gt, pred.to_pandas(), iou_min=args.iou)
    print(format_report(report))
    if args.json:
        Path(args.json).write_text(json.dumps(report.to_dict(), indent=2))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vcn", description="Group every face in a video by identity (VideoClusterNet).",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="show the libraries' logs (Prefect, Dask) and every traceback")
    # -v also after the command; SUPPRESS keeps a subcommand from resetting the flag to False.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                        help="show the libraries' logs (Prefect, Dask) and every traceback")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", parents=[common], help="run the per-movie flow on videos", epilog=EPILOG,
                         formatter_class=argparse.RawDescriptionHelpFormatter)
    run.add_argument("videos", nargs="+", help="video files")
    run.add_argument("--out", required=True, help="output folder; each video goes to OUT/<movie_id>/")
    run.add_argument("--method", choices=list(METHODS), help=cli_help())
    run.add_argument("--workers", type=int, help="local Dask worker processes (default: one per core)")
    run.add_argument("--dask-address", help="use a running distributed scheduler, e.g. tcp://host:8786")
    run.add_argument("--model-dir", help="insightface model folder (e.g. buffalo_l) to use instead")
    run.add_argument("--stride", type=int, help="detect faces on every N-th frame (default from config)")
    run.add_argument("--chunk-seconds", type=float, help="length of the chunks fanned out to workers")
    run.add_argument("--config", help="JSON file (or inline JSON) of config overrides, e.g. "
                     '\'{"ingest": {"stride": 3}}\'; see vcn/config.py')
    run.add_argument("--json", help="also write the batch summary as JSON to this file")
    run.set_defaults(func=cmd_run)

    ing = sub.add_parser(
        "ingest", parents=[common], help="process every new or changed title of a media library")
    ing.add_argument("library_root", nargs="?", help="folder scanned recursively for video files")
    ing.add_argument("--out", required=True, help="output folder: OUT/<movie_id>/ and OUT/catalogue/")
    ing.add_argument("--catalogue", help="CSV or Parquet file whose 'path' column lists the titles")
    ing.add_argument("--concurrency", type=int, default=2, help="titles processed at once (default 2)")
    ing.add_argument("--workers", type=int, help="local Dask worker processes (default: one per core)")
    ing.add_argument("--dask-address", help="use a running distributed scheduler, e.g. tcp://host:8786")
    ing.add_argument("--method", choices=list(METHODS), help=cli_help())
    ing.add_argument("--model-dir", help="insightface model folder (e.g. buffalo_l) to use instead")
    ing.add_argument("--stride", type=int, help="detect faces on every N-th frame (default from config)")
    ing.add_argument("--chunk-seconds", type=float, help="length of the chunks fanned out to workers")
    ing.add_argument("--json", help="also write the summary as JSON to this file")
    ing.add_argument("--dry-run", action="store_true",
                     help="list, per title, the stages a run would run and why (new file, file changed, "
                          "config changed, models changed, stage version changed, previous failure); "
                          "decodes and writes nothing")
    ing.set_defaults(func=cmd_ingest)

    rr = sub.add_parser(
        "rerun", parents=[common], help="re-run the failed (or named) stages of a processed movie")
    rr.add_argument("movie_dir", help="a movie's output folder, OUT/<movie_id>")
    rr.add_argument("--from", dest="from_stage", help="force this stage and the later ones: tracks, clusters")
    rr.add_argument("--workers", type=int, help="local Dask worker processes (default: one per core)")
    rr.add_argument("--dask-address", help="use a running distributed scheduler")
    rr.set_defaults(func=cmd_rerun)

    idn = sub.add_parser(
        "identities", parents=[common],
        help="link the clusters of a library's titles into identities (OUT/library/identities.parquet)")
    idn.add_argument("library_out", help="the --out folder of `vcn ingest` (holds catalogue/)")
    idn.add_argument("--rebuild", action="store_true",
                     help="link every title again, in path order, instead of only the new or changed ones")
    idn.set_defaults(func=cmd_identities)

    ids = ("ids as the report and identities.parquet show them: id_NNNNN (an identity), "
           "MOVIE_ID:person_NNN (a cluster), MOVIE_ID:TRACK_ID (a track)")
    for name, helptext in (("label", "name a person"), ("merge", "say two or more ids are one person"),
                           ("split", "say ids are different people, or split tracks off a cluster"),
                           ("reject", "say ids are nobody (no face): they become unknown")):
        rv = sub.add_parser(name, parents=[common], help=helptext + "; logged in OUT/library/corrections")
        rv.add_argument("library_out", help="the --out folder (of `vcn ingest` or `vcn run`)")
        rv.add_argument("targets", nargs="+" if name != "label" else 1, help=ids)
        if name == "label":
            rv.add_argument("name", help="the person's name")
        if name == "split":
            rv.add_argument("--off", nargs="+", help="ids of the tracks to split off the one target")
        rv.add_argument("--user", help="who says it (default: $VCN_USER, else the login name)")
        rv.set_defaults(func=cmd_review)

    rp = sub.add_parser(
        "report", parents=[common], help="write a self-contained HTML report of a processed movie")
    rp.add_argument("movie_dir", help="a movie's output folder, OUT/<movie_id>")
    rp.set_defaults(func=cmd_report)

    ev = sub.add_parser("eval", parents=[common], help="score a result against face-level ground truth")
    ev.add_argument("--gt", required=True, help="CSV: video,frame_idx,x1,y1,x2,y2,identity")
    ev.add_argument("--pred", required=True, help="a movie's output folder, OUT/<movie_id>")
    ev.add_argument("--iou", type=float, default=0.5, help="IoU to match a predicted face to a GT box")
    ev.add_argument("--json", help="also write the metrics as JSON to this file")
    ev.set_defaults(func=cmd_eval)
    return parser


def main(argv: list[str] | None = None) -> int:
    from vcn.flows.console import configure

    args = build_parser().parse_args(argv)
    configure(args.verbose)
    try:
        return args.func(args)
    except VcnError as exc:
        if args.verbose:
            traceback.print_exc()
        print(f"vcn: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
