"""Stage-1 throughput: frames/s, real-time factor, peak memory and a per-stage breakdown.

Runs the real per-movie flow (Prefect + Dask LocalCluster) on a 720p 25 fps video composed from
the dev clips, with 1 and 2 worker processes, and prints one row per run. Peak memory is the
largest summed RSS of the flow process and its Dask workers, sampled every 0.2 s. Stage seconds
are summed over the chunks: wall seconds, which grow when other programs share the cores, and
CPU seconds of the worker process (every thread), which do not.

    .venv/bin/python -m benchmarks.ingest [--seconds 120] [--workers 1 2] [--config JSON]

``--config`` adds to the run's config, e.g. ``'{"ingest": {"detection": {"proposer": "yunet"}}}'``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import tempfile
import threading
import time
from pathlib import Path

import psutil

from benchmarks.compose import compose_long_video


class PeakRSS:
    """Samples the summed RSS of this process and its children in a thread."""

    def __init__(self, interval: float = 0.2) -> None:
        self.interval, self.peak, self._stop = interval, 0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        me = psutil.Process()
        while not self._stop.is_set():
            total = 0
            for p in [me, *me.children(recursive=True)]:
                with contextlib.suppress(psutil.Error):
                    total += p.memory_info().rss
            self.peak = max(self.peak, total)
            time.sleep(self.interval)

    def __enter__(self) -> PeakRSS:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def run_once(video: Path, workers: int, method: str, config: dict | None = None) -> dict:
    from vcn.flows.movie import movie_flow
    from vcn.flows.runtime import dask_cluster
    from vcn.storage.layout import MovieLayout
    from vcn.storage.manifest import read_manifest

    out = Path(tempfile.mkdtemp(prefix="vcn-bench-"))
    try:
        with dask_cluster(None, workers) as address, PeakRSS() as mem:
            t0 = time.perf_counter()
            summary = movie_flow(address)(
                video_path=str(video), out_dir=str(out),
                config={**(config or {}), "cluster": {"method": method}},
            )
            wall = time.perf_counter() - t0
        manifest = read_manifest(MovieLayout(Path(summary["output"])))
        tracks = manifest.stages["tracks"]
        stages = tracks.extra.get("chunk_seconds", {})
        cpu = tracks.extra.get("chunk_cpu_seconds", {})
        n_frames = manifest.input.n_frames
        return {"workers": workers, "wall_s": wall, "fps": n_frames / wall,
                "rt": manifest.input.duration_s / wall, "peak_gib": mem.peak / 2**30,
                "stages": stages, "cpu": cpu, "faces": summary["faces"], "tracks": summary["tracks"]}
    finally:
        shutil.rmtree(out, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=120.0)
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--method", default="hac")
    ap.add_argument("--cache", default=".bench", help="where the composed video is kept")
    ap.add_argument("--config", type=json.loads, default=None, help="JSON added to the run's config")
    args = ap.parse_args()
    video = compose_long_video(Path(args.cache) / f"dev-720p-{int(args.seconds)}s.mp4", args.seconds)
    from vcn.flows.runtime import prefect_api

    with prefect_api():
        rows = [run_once(video, w, args.method, args.config) for w in args.workers]
    print(f"\n{video.name}: 1280x720, 25 fps, {args.seconds:.0f} s, {os.cpu_count()} cores")
    print(f"{'workers':>7} {'wall s':>8} {'frames/s':>9} {'x real time':>11} {'peak GiB':>9} {'faces':>7} "
          f"{'tracks':>7}  stage seconds, wall | CPU (summed over chunks)")
    for r in rows:
        st = ", ".join(f"{k} {v:.1f}" for k, v in sorted(r["stages"].items(), key=lambda kv: -kv[1]))
        cpu = ", ".join(f"{k} {v:.1f}" for k, v in sorted(r["cpu"].items(), key=lambda kv: -kv[1]))
        print(f"{r['workers']:>7} {r['wall_s']:>8.1f} {r['fps']:>9.1f} {r['rt']:>11.2f} "
              f"{r['peak_gib']:>9.2f} {r['faces']:>7} {r['tracks']:>7}  {st} | {cpu}")


if __name__ == "__main__":
    main()
