"""Faults a long library run meets: a lost Dask worker, a killed flow process, broken files.

Each test runs the real flows on real video under a real Prefect server and is bounded in time.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import psutil
import pyarrow.parquet as pq
import pytest

from vcn.flows.cli import main as vcn_main
from vcn.media.video import ChunkConfig, content_id, iter_frames, plan_chunks, probe
from vcn.storage import schemas
from vcn.storage.layout import MovieLayout
from vcn.storage.manifest import read_manifest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "samples" / "short_hamilton_clip.mp4"
SAMPLE_FPS = Fraction(30000, 1001)




def chunk_files(movie_dir: Path) -> list[Path]:
    return sorted((movie_dir / "chunks").glob("chunk-*.faces.parquet"))


class WorkerKiller(threading.Thread):
    """Kills (SIGKILL) the worker process running the first ``ingest_chunk`` task, mid-task."""

    def __init__(self, client, pids: dict[str, int], settle_s: float = 1.0, timeout_s: float = 240.0):
        super().__init__(daemon=True)
        self.client, self.pids, self.settle_s, self.timeout_s = client, pids, settle_s, timeout_s
        self.killed: tuple[str, int, str] | None = None

    def _busy(self) -> tuple[str, str] | None:
        for addr, keys in self.client.processing().items():
            for key in keys:
                if str(key).startswith("ingest_chunk"):
                    return addr, str(key)
        return None

    def run(self) -> None:
        deadline = time.monotonic() + self.timeout_s
        while time.monotonic() < deadline:
            busy = self._busy()
            if busy:
                time.sleep(self.settle_s)  # let the task get into decoding and inference
                addr, key = busy
                if key in self.client.processing().get(addr, ()):
                    os.kill(self.pids[addr], signal.SIGKILL)
                    self.killed = (addr, self.pids[addr], key)
                    return
            time.sleep(0.05)


@pytest.mark.timeout(400)
def test_worker_killed_during_a_chunk(prefect_server, tmp_path):
    from distributed import Client, LocalCluster

    from vcn.flows.movie import movie_flow

    out = tmp_path / "out"
    env = {"PREFECT_API_URL": prefect_server, "VCN_THREADS": "1"}
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None, env=env,
                      memory_limit=0) as cluster, Client(cluster) as client:
        pids = client.run(os.getpid)
        killer = WorkerKiller(client, pids)
        killer.start()
        summary = movie_flow(cluster.scheduler_address)(
            video_path=str(SAMPLE), out_dir=str(out),
            config={"ingest": {"chunk": {"chunk_seconds": 2}}, "cluster": {"method": "hac"}},
        )
        killer.join(timeout=5)
        assert killer.killed is not None, "no chunk task was seen running on a worker"
        _, pid, _ = killer.killed
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
        assert pid not in client.run(os.getpid).values(), "the nanny restarted the killed worker"
    movie = MovieLayout(Path(summary["output"]))
    assert summary["chunks"] == 5 == len(chunk_files(movie.root))
    assert summary["chunks_computed"] == 5
    assert read_manifest(movie).stages["tracks"].status == "completed"
    faces = pq.read_table(movie.faces, columns=["frame_idx"]).column("frame_idx").to_numpy()
    assert summary["faces"] == len(faces) > 100
    # Faces from every part of the clip: no chunk was lost with the worker.
    assert np.histogram(faces, bins=5, range=(0, 275))[0].min() > 0


def _descendants(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


@pytest.mark.timeout(500)
def test_flow_process_killed_mid_movie_then_rerun(prefect_server, tmp_path):
    out, summary = tmp_path / "out", tmp_path / "rerun.json"
    args = ["run", str(SAMPLE), "--out", str(out), "--workers", "1", "--chunk-seconds", "1",
            "--method", "hac"]
    movie_dir = out / content_id(str(SAMPLE))
    proc = subprocess.Popen([sys.executable, "-m", "vcn.flows.cli", *args], cwd=ROOT, env=dict(os.environ),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        while not (movie_dir.exists() and chunk_files(movie_dir)):
            assert proc.poll() is None, "vcn run ended before writing a chunk"
            assert time.monotonic() < deadline, "no chunk file within 300 s"
            time.sleep(0.05)
        children = _descendants(proc.pid)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        # The Dask worker processes notice their parent's death and exit on their own.
        _, alive = psutil.wait_procs(children, timeout=60)
        assert not alive, f"worker processes outlived the killed flow: {alive}"
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
    assert read_manifest(MovieLayout(movie_dir)).stages.get("tracks") is None
    before = chunk_files(movie_dir)
    finished = {p.name: schemas.table_metadata(str(p))["flow_run_id"] for p in before}
    assert len(set(finished.values())) == 1

    assert vcn_main([*args, "--json", str(summary)]) == 0
    (rows,) = json.loads(summary.read_text())["ok"]
    info = probe(str(SAMPLE))
    n_chunks = len(plan_chunks(info.n_frames, info.fps, ChunkConfig(chunk_seconds=1)))
    assert rows["chunks"] == n_chunks == len(chunk_files(movie_dir)) >= 8
    assert 1 <= len(finished) < rows["chunks"], "the kill must land mid-movie"
    print(f"killed after {len(finished)} of {n_chunks} chunks; the re-run computed {rows['chunks_computed']}")
    assert rows["chunks_computed"] == rows["chunks"] - len(finished)
    after = {p.name: schemas.table_metadata(str(p))["flow_run_id"] for p in chunk_files(movie_dir)}
    assert {n: after[n] for n in finished} == finished, "chunks finished before the kill are kept"


def _write_audio_only(path: Path) -> None:
    with av.open(str(path), "w") as container:
        stream = container.add_stream("aac", rate=16000)
        for i in range(20):
            frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
            frame.sample_rate, frame.pts = 16000, i * 1024
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)


def _digests(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.blake2b(p.read_bytes(), digest_size=16).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


# Library-wide tables that every newly linked title adds rows to (vcn.storage.identities).
LIBRARY_TABLES = {"library/members.parquet", "library/identities.parquet"}


def _title_members(out: Path, title: str) -> list[tuple]:
    """The rows of ``library/members.parquet`` for the clusters of ``title`` (a video's name):
    cluster, identity, name and link, without the row's rank."""
    members = pq.read_table(out / "library" / "members.parquet").to_pandas()
    (movie_id,) = [d.name for d in out.iterdir() if (d / "manifest.json").is_file() and
                   Path(read_manifest(MovieLayout(d)).input_path or "").name == title]
    rows = members[members["movie_id"] == movie_id]
    cols = ["cluster_id", "identity_id", "name", "linked_identity_id", "linked_movie_id", "linked_cluster_id"]
    return sorted(tuple(r) for r in rows[cols].itertuples(index=False))


@pytest.mark.timeout(500)
def test_library_with_broken_files(prefect_server, tmp_path, make_video, faststart_cut):
    lib, out = tmp_path / "lib", tmp_path / "out"
    lib.mkdir()
    good_a = Path(make_video("h8_faults_a.mp4", (f for _, f in iter_frames(str(SAMPLE), 0, 60)), SAMPLE_FPS))
    good_b = Path(make_video("h8_faults_b.mkv", (f for _, f in iter_frames(str(SAMPLE), 160, 220)),
                             SAMPLE_FPS))
    (lib / "a.mp4").write_bytes(good_a.read_bytes())
    common = ["--out", str(out), "--workers", "1", "--chunk-seconds", "1", "--method", "hac"]
    assert vcn_main(["ingest", str(lib), *common, "--json", str(tmp_path / "first.json")]) == 0
    first = _digests(out)
    first_members = _title_members(out, "a.mp4")

    rng = np.random.default_rng(0)
    bad = {
        "random.mp4": rng.integers(0, 256, 200_000, dtype=np.uint8).tobytes(),
        "truncated.mp4": good_a.read_bytes()[: good_a.stat().st_size // 2],  # MP4: moov atom lost
        "empty.mkv": b"",
        "letter.avi": b"Dear reader, this is not a video.\n" * 40,
    }
    (lib / "extras").mkdir()
    for name, data in bad.items():
        (lib / "extras" / name).write_bytes(data)
    _write_audio_only(lib / "extras" / "soundtrack.mp4")
    bad["soundtrack.mp4"] = b""
    (lib / "extras" / "poster.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    (lib / "b.mkv").write_bytes(good_b.read_bytes())
    faststart_cut(SAMPLE, lib / "extras" / "cut.mp4", 200_000)
    bad["cut.mp4"] = b""

    report = tmp_path / "second.json"
    assert vcn_main(["ingest", str(lib), *common, "--json", str(report)]) == 1
    summary = json.loads(report.read_text())
    assert [Path(e["video"]).name for e in summary["processed"]] == ["b.mkv"]
    failed = {Path(e["video"]).name: e["reason"] for e in summary["failed"]}
    assert set(failed) == set(bad)
    for name, why in failed.items():
        assert name in why, f"the reason for {name} must name the file: {why}"
    assert "no video stream" in failed["soundtrack.mp4"]
    assert "truncated: only 115 of the 275 frames the container declares decode" in failed["cut.mp4"]
    assert summary["ignored_files"] == 1
    assert [Path(e["video"]).name for e in summary["skipped"]] == ["a.mp4"]
    now = _digests(out)
    # The library's identity tables grow by the new title's clusters; every other file of the
    # earlier run is untouched, and so are the earlier title's rows in those tables.
    assert {k: now.get(k) for k in first if k not in LIBRARY_TABLES} == \
        {k: v for k, v in first.items() if k not in LIBRARY_TABLES}, \
        "files of the earlier run must survive byte-identical"
    assert first_members and _title_members(out, "a.mp4") == first_members

    # The next night: the unchanged bad files are reported again without being decoded again; a
    # changed file (a longer, still cut copy: new content) is tried afresh.
    faststart_cut(SAMPLE, lib / "extras" / "cut.mp4", 300_000)
    report = tmp_path / "third.json"
    assert vcn_main(["ingest", str(lib), *common, "--json", str(report)]) == 1
    third = json.loads(report.read_text())
    assert third["processed"] == []
    again = {Path(e["video"]).name: e["reason"] for e in third["failed"]}
    assert set(again) == set(bad)
    for name, why in again.items():
        if name == "cut.mp4":
            assert "unchanged" not in why and "truncated: only 160 of the 275 frames" in why
        else:
            assert why.startswith(failed[name].split(" (unchanged")[0]) and "(unchanged since" in why, why


def _prefect_result_file(key: str, value: object) -> str:
    """A Prefect 3 result record (the JSON Prefect writes under a result storage's key) whose
    pickled value is ``value``: what a cache hit on ``key`` would read back."""
    import base64
    import pickle

    import prefect

    return json.dumps({
        "metadata": {"storage_key": key, "expiration": None,
                     "serializer": {"type": "pickle", "picklelib": "pickle", "picklelib_version": None},
                     "prefect_version": prefect.__version__, "storage_block_id": None},
        "result": base64.encodebytes(pickle.dumps(value)).decode(),
    })


@pytest.mark.timeout(600)
def test_planted_pickles_never_run(prefect_server, tmp_path, short_finetune, code_payload):
    """Another account writes pickles where a re-run looks: task results under the results folder
    (at the keys the chunk tasks' cache would look up) and ``model/checkpoint.pt``. The re-run
    runs none of them, refuses the checkpoint, finetunes from the start and completes."""
    import torch

    from vcn.storage.checkpoints import FORMAT, load_checkpoint

    out = tmp_path / "out"
    common = ["run", str(SAMPLE), "--out", str(out), "--workers", "1", "--chunk-seconds", "3"]
    assert vcn_main([*common, "--method", "hac", "--json", str(tmp_path / "first.json")]) == 0
    (first,) = json.loads((tmp_path / "first.json").read_text())["ok"]
    movie = MovieLayout(Path(first["output"]))

    results = out / ".prefect-results"
    results.mkdir(exist_ok=True)
    existing = {p for p in results.rglob("*") if p.is_file()}  # results a run left there: none
    keys = {results / _chunk_key(movie, p) for p in chunk_files(movie.root)}
    markers = []
    for i, path in enumerate(sorted(existing | keys)):
        markers.append(tmp_path / f"ran-result-{i}")
        report = {"index": i, "computed": False, "n_frames": 1, "timings": {}}
        path.write_text(_prefect_result_file(path.name, code_payload(markers[-1], report)))
    markers.append(tmp_path / "ran-checkpoint")
    movie.model_dir.mkdir(exist_ok=True)
    torch.save({"format": FORMAT, "round": code_payload(markers[-1], 0), "matches": torch.zeros(0, 2)},
               movie.model_dir / "checkpoint.pt")
    movie.faces.unlink()  # the tracks stage runs again over the chunks

    config = json.dumps(short_finetune)  # the default method: the finetune runs
    code = vcn_main([*common, "--config", config, "--json", str(tmp_path / "s.json")])
    assert [m.name for m in markers if m.exists()] == [], "a planted pickle ran"
    assert code == 0
    (rows,) = json.loads((tmp_path / "s.json").read_text())["ok"]
    assert rows["faces"] == first["faces"] and rows["chunks_computed"] == 0, "the chunk files are reused"
    manifest = read_manifest(movie)
    assert {manifest.stages[s].status for s in ("tracks", "finetune", "clusters")} == {"completed"}
    ft = manifest.stages["finetune"]
    assert "checkpoint.pt: not a checkpoint vcn can read" in ft.extra["checkpoint_refused"]
    assert ft.extra["resumed_at_step"] is None
    ck = load_checkpoint(movie.model_dir / "final.pt")
    assert ck.done and ck.state.step == 16, "the finetune ran from the start"
    assert not (movie.model_dir / "checkpoint.pt").exists()
    # Nothing vcn wrote is a pickle outside model/ (whose files load with weights_only=True).
    written = [p for p in out.rglob("*") if p.is_file() and p.parent != results and "model" not in p.parts]
    assert all(not p.read_bytes().startswith(b"\x80") for p in written)
    assert existing == set() and {p for p in results.rglob("*") if p.is_file()} == keys, \
        "no Prefect result is written"


def _chunk_key(movie: MovieLayout, chunk_file: Path) -> str:
    """The result key a cached chunk task of this title would be read back from: the chunk, its
    stage and code hashes (from the chunk file), and its outputs present."""
    meta = schemas.table_metadata(str(chunk_file))
    c = meta["chunk"]
    return (f"vcn-chunk-{movie.root.name}-{c['index']}-{c['read_start']}-{c['end']}-"
            f"{meta['stage_hash']}-{meta['code_hash']}-present")
