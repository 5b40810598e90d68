"""``manifest.json``: a movie's lineage and its stages' completion records.

The manifest records what went in (input file, its content id, models and their hashes, the full
config, code and package versions) and, per stage, the latest run (status, Prefect run ids, times,
row counts, output files, the stage's hashes) plus the history of every run. A stage counts as
finished only when its record says ``completed`` *and* was made with the current stage hash (its
config section, the models and its algorithm version, :mod:`vcn.versions`) *and* its output files
exist: that is what re-runs and ``vcn rerun`` trust. The code hash is lineage only.

Updates are read-modify-write under an exclusive file lock and written atomically, so two runs on
the same title cannot interleave a half-written manifest. The records are
:mod:`vcn.manifest`'s dataclasses; this module reads and writes the file.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import importlib.metadata
import importlib.util
import os
import subprocess
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from vcn.manifest import InputFailure, Manifest, StageRecord
from vcn.storage.atomic import read_json, write_json
from vcn.storage.layout import MovieLayout

PACKAGES = (
    "vcn", "numpy", "scipy", "pandas", "pyarrow", "av", "opencv-python", "scenedetect", "onnxruntime",
    "onnx", "insightface", "torch", "prefect", "prefect-dask", "dask", "distributed",
)


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def file_hash(path: str | os.PathLike[str]) -> str:
    """blake2b-128 of a whole file (model files are small enough to hash completely)."""
    h = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def package_versions() -> dict[str, str]:
    """Installed versions of the packages whose behaviour shapes the outputs."""
    out = {}
    for name in PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = "absent"
    return out


# Modules that do not shape a movie's outputs, left out of the lineage hash.
NOT_OUTPUT_SHAPING = {"cli.py", "report.py", "html.py", "metrics.py", "library.py", "catalogue.py",
                      "results.py", "runtime.py", "__init__.py"}


def _package_dir(name: str) -> Path:
    """The folder of package ``name`` as installed (vcn.storage is storage/ in a checkout)."""
    spec = importlib.util.find_spec(name)
    assert spec is not None and spec.submodule_search_locations
    return Path(next(iter(spec.submodule_search_locations))).resolve()


def _source_files() -> list[Path]:
    """The core's modules (without the application in vcn.flows) plus vcn.storage and vcn.tasks,
    wherever the install put them."""
    outer = [_package_dir(name) for name in ("vcn.flows", "vcn.storage", "vcn.tasks")]
    core = [p for p in _package_dir("vcn").rglob("*.py") if not any(p.is_relative_to(d) for d in outer)]
    files = {*core, *(p for d in outer[1:] for p in d.rglob("*.py"))}
    return sorted((p for p in files if p.name not in NOT_OUTPUT_SHAPING), key=lambda p: p.as_posix())


def code_hash() -> str:
    """Hash of the source that shapes outputs (vcn, storage, tasks, minus reporting and CLI), for
    the lineage in the manifest; what invalidates a stage is its version (:mod:`vcn.versions`)."""
    h = hashlib.blake2b(digest_size=8)
    for path in _source_files():
        h.update(path.name.encode())
        h.update(path.read_bytes())
    return h.hexdigest()


def code_version() -> dict[str, str]:
    """The package version, the git commit when run from a checkout, and the source hash."""
    import vcn

    commit = "unknown"
    root = Path(__file__).resolve().parent.parent
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        res = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--short=12", "HEAD"],
            capture_output=True, text=True, timeout=5, check=False,
        )
        if res.returncode == 0:
            commit = res.stdout.strip()
    return {"vcn_version": vcn.__version__, "git_commit": commit, "code_hash": code_hash()}


@contextlib.contextmanager
def file_lock(path: str | os.PathLike[str], timeout_s: float = 600.0) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``path`` (created if missing) for the ``with`` body."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)  # the umask applies, as for open()
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise TimeoutError(
                        f"{path} is locked by another vcn run; wait for it or remove it"
                    ) from None
                time.sleep(0.2)
        yield
    finally:
        os.close(fd)


def read_manifest(layout: MovieLayout) -> Manifest:
    """The movie's manifest, or an empty one naming the movie when none exists yet."""
    if layout.manifest.exists():
        return Manifest.from_json(read_json(layout.manifest))
    return Manifest(movie_id=layout.movie_id)


def update_manifest(layout: MovieLayout, **fields: Any) -> Manifest:
    """Set top-level ``fields`` of the manifest (``movie_id``, ``input``, ``input_error``, ``code``,
    ``packages``, ``models``, ``config``; see :class:`vcn.manifest.Manifest`) and return it."""
    with file_lock(layout.root / ".manifest.lock"):
        manifest = dataclasses.replace(read_manifest(layout), **fields)
        write_json(layout.manifest, manifest.to_json())
    return manifest


def record_stage(layout: MovieLayout, stage: str, record: StageRecord | dict[str, Any]) -> StageRecord:
    """Store ``record`` (or its JSON object) as ``stage``'s latest run and append it to the history;
    the stored record names ``stage`` and, unless it says when, the time it was recorded."""
    if isinstance(record, dict):
        record = StageRecord.from_json(record)
    record = dataclasses.replace(record, stage=stage, recorded_at=record.recorded_at or now_iso())
    with file_lock(layout.root / ".manifest.lock"):
        manifest = read_manifest(layout).with_stage(record)
        write_json(layout.manifest, manifest.to_json())
    return record


def record_input_error(layout: MovieLayout, path: str, exc: BaseException) -> Manifest:
    """Record that the file ``path`` (whose content id names ``layout``) is not a usable video."""
    failure = InputFailure(path=str(Path(path).resolve()), error=f"{type(exc).__name__}: {exc}",
                           recorded_at=now_iso())
    return update_manifest(layout, movie_id=layout.movie_id, input_error=failure)


def missing_outputs(layout: MovieLayout, record: StageRecord) -> list[str]:
    """The output files a stage record lists that are no longer there."""
    return [f for f in record.outputs or [] if not (layout.root / f).exists()]


def stage_is_complete(layout: MovieLayout, stage: str, stage_hash: str) -> bool:
    """True when ``stage`` completed with this stage hash (its config section, models and
    algorithm version; ``vcn.tasks.context.MovieContext.stage_hash``) and its outputs still exist."""
    rec = read_manifest(layout).stages.get(stage)
    if rec is None or not rec.completed or rec.stage_hash != stage_hash:
        return False
    return not missing_outputs(layout, rec)


def known_paths(out_dir: str) -> dict[str, str]:
    """The content id each input path had when last run into ``out_dir`` (from the manifests)."""
    known: dict[str, str] = {}
    for manifest_path in sorted(Path(out_dir).glob("*/manifest.json")):
        try:
            manifest = Manifest.from_json(read_json(manifest_path))
        except (OSError, ValueError):
            continue
        for entry in (manifest.input, manifest.input_error):
            if entry is not None and entry.path:
                known[entry.path] = manifest_path.parent.name
    return known
