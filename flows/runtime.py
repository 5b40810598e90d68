"""Where flows run: a Prefect API to report to and a Dask cluster to fan out on.

``vcn run`` works with no server running: when ``PREFECT_API_URL`` is unset it starts a private
Prefect server on 127.0.0.1 for the duration of the command (the same SQLite database a later
``prefect server start`` shows), and exports its URL *before* the Dask workers start, so that
worker processes report to it instead of each starting a temporary server of their own.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

TASK_RUNNER_ENV = ("PREFECT_API_URL", "VCN_THREADS")


@contextlib.contextmanager
def prefect_api() -> Iterator[str]:
    """Yield the Prefect API URL in use, starting a private server when none is configured."""
    url = os.environ.get("PREFECT_API_URL")
    if url:
        yield url
        return
    from prefect.server.api.server import SubprocessASGIServer

    # No telemetry from a private server (this machine may have no internet at all), and a
    # generous start-up timeout: a loaded laptop can take well over the default 20 s.
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    server = SubprocessASGIServer()
    server.start(timeout=int(os.environ.get("VCN_SERVER_STARTUP_TIMEOUT", "180")))
    os.environ["PREFECT_API_URL"] = server.api_url
    try:
        yield server.api_url
    finally:
        _drain_logs()
        os.environ.pop("PREFECT_API_URL", None)
        server.stop()


def _drain_logs() -> None:
    """Send the last log lines before the private server goes away (else: "Error logging to API")."""
    from prefect.logging.handlers import APILogHandler

    with contextlib.suppress(Exception):
        APILogHandler().flush()


@contextlib.contextmanager
def dask_cluster(address: str | None = None, n_workers: int | None = None) -> Iterator[str]:
    """Yield a Dask scheduler address: ``address`` itself, or a LocalCluster's, closed on exit.

    The local cluster has one single-threaded worker process per core (ONNX Runtime and PyTorch
    parallelise poorly below a few hundred ms of work, so processes beat threads for chunk
    tasks); each model session gets ``cores // n_workers`` threads through ``VCN_THREADS``.
    """
    if address:
        yield address
        return
    import dask
    from distributed import LocalCluster

    cores = os.cpu_count() or 1
    n = n_workers or cores
    os.environ["VCN_THREADS"] = str(max(1, cores // n))
    env = {k: os.environ[k] for k in TASK_RUNNER_ENV if k in os.environ}
    # On a machine with a GPU every local worker advertises it, so the finetune can ask for it.
    resources = {"GPU": 1} if _has_cuda() else None
    # Dask starts workers with MALLOC_TRIM_THRESHOLD_=65536, which makes glibc hand memory back
    # after every large free: PyTorch's finetune then runs 1.6 times slower (adapt on the Hamilton
    # clip, one thread: 107 s with glibc's default, 172 s with it; docs/method.md, "Cost").
    # Workers here have no memory limit to police, so they keep glibc's default. A Dask nanny
    # started earlier in this process leaves the variable in os.environ, where the workers would
    # inherit it: it is set aside while this cluster runs.
    inherited = os.environ.pop("MALLOC_TRIM_THRESHOLD_", None)
    trim_unset = {"distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None}
    try:
        with dask.config.set(trim_unset), LocalCluster(
            n_workers=n, threads_per_worker=1, processes=True, dashboard_address=None, env=env,
            memory_limit=0, resources=resources,
            # Each worker prints what the command prints (flows/console.py).
            preload=["vcn.flows.console"],
        ) as cluster:
            yield cluster.scheduler_address
    finally:
        if inherited is not None:
            os.environ["MALLOC_TRIM_THRESHOLD_"] = inherited


def model_threads(address: str | None, titles_in_flight: int) -> int | None:
    """PyTorch threads for a title's model tasks (finetune, clustering) on the local cluster: the
    cores shared by the titles in flight. ``None`` on an existing cluster (``address``): the
    tasks then take their worker's ``VCN_THREADS`` (``vcn.tasks.models.torch_threads``).

    A title's stages run one after another, so while its finetune or clustering runs the title
    has no chunk task on the other workers; the workers' one thread each (``OMP_NUM_THREADS=1``,
    set by Dask's nanny) left those cores idle. Dividing by the titles in flight keeps a library
    run (two titles, two cores) from oversubscribing the cores. Measured in docs/method.md, "Cost".
    """
    if address:
        return None
    return max(1, (os.cpu_count() or 1) // max(1, titles_in_flight))


def _has_cuda() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def gpu_workers(address: str) -> bool:
    """True when a worker of the scheduler at ``address`` advertises a ``GPU`` resource
    (``dask worker ... --resources GPU=1``)."""
    from distributed import Client

    with Client(address, timeout=30) as client:
        workers = client.scheduler_info().get("workers", {})
    return any("GPU" in (w.get("resources") or {}) for w in workers.values())


@contextlib.contextmanager
def gpu_annotation(enabled: bool) -> Iterator[None]:
    """Dask annotation that sends the tasks submitted inside it to GPU workers."""
    if not enabled:
        yield
        return
    import dask

    with dask.annotate(resources={"GPU": 1}):
        yield
