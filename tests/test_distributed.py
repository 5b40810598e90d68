"""A movie on a real distributed cluster: a `dask scheduler` and two `dask worker` processes.

The cluster is started the way docs/operations.md describes for several machines (here all on
127.0.0.1), with ``PREFECT_API_URL`` exported to the workers; ``vcn run --dask-address`` must give
the same faces, tracks and clusters as a run on a local cluster.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from fractions import Fraction
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

from vcn.flows.cli import main as vcn_main
from vcn.media.video import iter_frames
from vcn.storage.layout import MovieLayout
from vcn.storage.manifest import read_manifest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parent.parent
DASK = ROOT / ".venv" / "bin" / "dask"
SAMPLE = ROOT / "samples" / "short_hamilton_clip.mp4"
RUN_ARGS = ["--chunk-seconds", "1", "--method", "hac"]




def _stop(procs: list[subprocess.Popen]) -> None:
    """SIGTERM each process group (a worker's nanny and its worker), SIGKILL what is left."""
    for p in procs:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGTERM)
    deadline = time.monotonic() + 20
    for p in procs:
        try:
            p.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait(timeout=10)


@pytest.fixture(scope="module")
def dask_cluster(prefect_server, tmp_path_factory):
    """``dask scheduler`` + two ``dask worker`` processes on 127.0.0.1; yields the scheduler address."""
    from distributed import Client

    if not DASK.exists():
        pytest.skip(f"{DASK} is missing; the venv has no dask CLI")
    d = tmp_path_factory.mktemp("dask")
    sched_file = d / "scheduler.json"
    # One model thread per worker, as a local cluster on this machine uses: identical numerics.
    env = {**os.environ, "PREFECT_API_URL": prefect_server, "VCN_THREADS": "1"}
    logs = [open(d / name, "w") for name in ("scheduler.log", "worker0.log", "worker1.log")]  # noqa: SIM115
    common = {"cwd": ROOT, "env": env, "start_new_session": True, "stdout": subprocess.DEVNULL}
    scheduler = [str(DASK), "scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
                 "--scheduler-file", str(sched_file)]
    procs = [subprocess.Popen(scheduler, stderr=logs[0], **common)]
    try:
        deadline = time.monotonic() + 120
        while not sched_file.exists():
            assert procs[0].poll() is None, (d / "scheduler.log").read_text()[-2000:]
            assert time.monotonic() < deadline, "the scheduler did not start within 120 s"
            time.sleep(0.2)
        time.sleep(0.5)  # the file is written before it is complete on some file systems
        address = json.loads(sched_file.read_text())["address"]
        for i in range(2):
            # w1 advertises a GPU (a Dask resource is a label: this machine has none), as a GPU
            # node of a user's cluster would; vcn then sends the model stages there.
            gpu = ["--resources", "GPU=1"] if i == 1 else []
            procs.append(subprocess.Popen(
                [str(DASK), "worker", address, "--nworkers", "1", "--nthreads", "1", "--memory-limit", "0",
                 "--no-dashboard", "--name", f"w{i}", *gpu], stderr=logs[1 + i], **common))
        with Client(address, timeout=60) as client:
            client.wait_for_workers(2, timeout=180)
        yield address
    finally:
        _stop(procs)
        for log in logs:
            log.close()


@pytest.fixture(scope="module")
def clip(make_video) -> Path:
    frames = (f for _, f in iter_frames(str(SAMPLE), 90, 180))
    return Path(make_video("h8_dist_clip.mp4", frames, Fraction(30000, 1001)))


def _run(clip: Path, out: Path, *extra: str) -> dict:
    summary = out.with_suffix(".json")
    assert vcn_main(["run", str(clip), "--out", str(out), *RUN_ARGS, *extra, "--json", str(summary)]) == 0
    (row,) = json.loads(summary.read_text())["ok"]
    return row


def _table(path: Path) -> pd.DataFrame:
    # Parquet schema metadata holds run ids and timestamps; the rows are what must match.
    return pq.read_table(path).replace_schema_metadata(None).to_pandas()


@pytest.mark.timeout(600)
def test_distributed_run_equals_local_run(dask_cluster, clip, tmp_path):
    from distributed import Client

    with Client(dask_cluster) as client:
        before = client.run(lambda dask_worker: dask_worker.state.transition_counter)
    remote = _run(clip, tmp_path / "remote", "--dask-address", dask_cluster)
    with Client(dask_cluster) as client:
        after = client.run(lambda dask_worker: dask_worker.state.transition_counter)
    assert remote["chunks"] == 3 and remote["chunks_computed"] == 3
    assert all(after[w] > before[w] for w in before), "both workers must have run chunk tasks"

    local = _run(clip, tmp_path / "local", "--workers", "2")
    assert local["movie_id"] == remote["movie_id"]
    a, b = MovieLayout(Path(local["output"])), MovieLayout(Path(remote["output"]))
    for name in ("faces", "tracks", "shots", "clusters"):
        pd.testing.assert_frame_equal(_table(getattr(a, name)), _table(getattr(b, name)), obj=name)
    assert len(_table(a.faces)) >= 10


@pytest.mark.timeout(600)
def test_model_stages_run_on_the_worker_that_advertises_a_gpu(dask_cluster, tmp_path, short_finetune):
    """With a GPU worker in the cluster, the finetune and the vcn clustering are scheduled there
    (Dask resources); the manifest names the worker."""
    from distributed import Client

    with Client(dask_cluster) as client:
        workers = client.scheduler_info()["workers"]
    (gpu_worker,) = [a for a, w in workers.items() if "GPU" in (w.get("resources") or {})]
    summary = tmp_path / "vcn.json"
    # The whole sample (15 tracks): stage 4 needs tracks to cluster, the 3 s clip has one.
    assert vcn_main(["run", str(SAMPLE), "--out", str(tmp_path / "out"), "--chunk-seconds", "3",
                     "--dask-address", dask_cluster, "--config", json.dumps(short_finetune),
                     "--json", str(summary)]) == 0
    (row,) = json.loads(summary.read_text())["ok"]
    stages = read_manifest(MovieLayout(Path(row["output"]))).stages
    finetune, clusters = stages["finetune"].extra, stages["clusters"].extra
    assert clusters["method"] == "vcn" and clusters["start_groups"] > 1
    assert finetune["worker"] == gpu_worker
    assert clusters["worker"] == gpu_worker
    # No CUDA on this machine: the GPU worker falls back to the CPU, with its VCN_THREADS (1).
    assert finetune["device"] == clusters["device"] == "cpu"
    assert clusters["torch_threads"] == 1


def test_model_threads_share_the_local_cores_among_titles_in_flight():
    from vcn.flows.runtime import model_threads

    cores = os.cpu_count() or 1
    assert model_threads(None, 1) == cores
    assert model_threads(None, 2) == max(1, cores // 2)
    assert model_threads(None, cores + 1) == 1
    assert model_threads("tcp://10.0.0.1:8786", 1) is None  # a user's cluster: its VCN_THREADS


def test_local_workers_keep_glibc_malloc_defaults(monkeypatch):
    """vcn's local cluster drops Dask's MALLOC_TRIM_THRESHOLD_ for its workers (it slows the
    finetune 1.6 times), also where an earlier Dask nanny of the process left it in os.environ,
    keeps Dask's one OpenMP thread per worker, and leaves Dask's config and the environment as
    they were."""
    import dask
    from distributed import Client

    from vcn.flows.runtime import dask_cluster

    def worker_env() -> dict:
        return {k: os.environ.get(k) for k in ("MALLOC_TRIM_THRESHOLD_", "OMP_NUM_THREADS")}

    def threads_inside_and_after(n: int | None) -> tuple[int, int]:
        import torch

        from vcn.tasks.models import torch_threads

        with torch_threads(n):
            inside = torch.get_num_threads()
        return inside, torch.get_num_threads()

    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "65536")  # what a default LocalCluster leaves behind
    with dask_cluster(None, 1) as address, Client(address) as client:
        envs = list(client.run(worker_env).values())
        threads = client.submit(threads_inside_and_after, 2, pure=False).result()
        # No explicit count: the worker's VCN_THREADS (one worker: all the cores).
        default = client.submit(threads_inside_and_after, None, pure=False).result()
    assert envs == [{"MALLOC_TRIM_THRESHOLD_": None, "OMP_NUM_THREADS": "1"}]
    assert os.environ["MALLOC_TRIM_THRESHOLD_"] == "65536"
    # The finetune task widens its worker's one thread for its own run only.
    assert threads == (2, 1)
    assert default == (os.cpu_count() or 1, 1)
    assert dask.config.get("distributed.nanny.pre-spawn-environ")["MALLOC_TRIM_THRESHOLD_"] == 65536
