"""The catalogue: every finished movie's faces, tracks and clusters as one Parquet dataset.

Layout (Hive partitioning, one folder per movie, so a movie is added or replaced without touching
the others)::

    OUT/catalogue/faces/movie_id=<id>/part-0.parquet      same columns as OUT/<id>/faces.parquet
    OUT/catalogue/tracks/movie_id=<id>/part-0.parquet     same columns as OUT/<id>/tracks.parquet
    OUT/catalogue/clusters/movie_id=<id>/part-0.parquet   same columns as OUT/<id>/clusters.parquet
    OUT/catalogue/movies/movie_id=<id>/part-0.parquet     one row: path, name, duration, fps, ...

``movie_id`` is not a column inside the files: readers take it from the folder name
(``pd.read_parquet(OUT/catalogue/faces)``, DuckDB's ``hive_partitioning=true``). Embeddings are
kept (``fixed_size_list<float32>[512]``, DuckDB ``FLOAT[512]``). Every file is written
atomically; the temporary files start with ``.``, which pyarrow's dataset discovery skips and
DuckDB's ``*.parquet`` glob does not match. The ``movies`` partition is written last and carries
the stamp of the outputs it was made from, so an interrupted publication is redone.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from vcn.errors import StageError
from vcn.manifest import InputRecord, Manifest
from vcn.storage import schemas
from vcn.storage.atomic import write_parquet
from vcn.storage.layout import MovieLayout
from vcn.storage.manifest import file_lock, now_iso, read_manifest

TABLES = ("faces", "tracks", "clusters")
MOVIES = "movies"
PARTITION_FILE = "part-0.parquet"

MOVIES_SCHEMA = pa.schema(
    [
        ("path", pa.string()),
        ("name", pa.string()),
        ("duration_s", pa.float64()),
        ("fps", pa.float64()),
        ("n_frames", pa.int64()),
        ("width", pa.int32()),
        ("height", pa.int32()),
        ("faces", pa.int64()),
        ("tracks", pa.int64()),
        ("clusters", pa.int64()),
        ("method", pa.string()),
        ("code_hash", pa.string()),
        ("published_at", pa.string()),
    ]
)


@dataclass(frozen=True)
class CatalogueLayout:
    """Paths of the catalogue dataset under ``OUT/catalogue``."""

    root: Path

    @classmethod
    def of(cls, out_dir: str | Path) -> CatalogueLayout:
        return cls(Path(out_dir) / "catalogue")

    def table_dir(self, table: str) -> Path:
        """Folder of one table, the path pandas and pyarrow read as a dataset."""
        return self.root / table

    def partition(self, table: str, movie_id: str) -> Path:
        return self.table_dir(table) / f"movie_id={movie_id}" / PARTITION_FILE

    def glob(self, table: str) -> str:
        """The file pattern DuckDB's ``read_parquet(..., hive_partitioning=true)`` takes."""
        return str(self.table_dir(table) / "*" / "*.parquet")


def source_stamp(movie: MovieLayout) -> str | None:
    """Identity of a movie's finished outputs: the run and time of its last completed clustering.

    None when the movie has no completed ``clusters`` stage (nothing publishable yet).
    """
    rec = read_manifest(movie).stages.get("clusters")
    if rec is None or not rec.completed:
        return None
    return f"{rec.flow_run_id}@{rec.recorded_at}"


def is_current(catalogue: CatalogueLayout, movie: MovieLayout) -> bool:
    """True when every partition of ``movie`` exists and was made from its current outputs."""
    stamp = source_stamp(movie)
    if stamp is None:
        return False
    paths = [catalogue.partition(t, movie.movie_id) for t in (*TABLES, MOVIES)]
    if not all(p.exists() for p in paths):
        return False
    return schemas.table_metadata(str(paths[-1])).get("source") == stamp


def _movie_row(movie: MovieLayout, manifest: Manifest, rows: dict[str, int]) -> dict[str, list]:
    inp = manifest.input or InputRecord()
    stage = manifest.stages["clusters"]
    return {
        "path": [inp.path], "name": [Path(inp.path).name],
        "duration_s": [inp.duration_s], "fps": [inp.fps], "n_frames": [inp.n_frames],
        "width": [inp.width], "height": [inp.height],
        "faces": [rows["faces"]], "tracks": [rows["tracks"]], "clusters": [rows["clusters"]],
        "method": [stage.extra.get("method", "")], "code_hash": [stage.code_hash or ""],
        "published_at": [now_iso()],
    }


def publish_movie(out_dir: str | Path, movie_id: str, lock_timeout_s: float = 600.0) -> dict[str, int]:
    """Copy a finished movie's faces, tracks and clusters into the catalogue; return row counts.

    Each partition is replaced atomically; ``movies`` goes last as the completion marker. Raises
    :class:`StageError` when the movie under ``out_dir`` has not completed its ``clusters`` stage,
    TimeoutError when another run holds the movie's lock for over ``lock_timeout_s`` seconds.
    """
    movie = MovieLayout.of(out_dir, movie_id)
    catalogue = CatalogueLayout.of(out_dir)
    # The movie's own lock: a run of the same title elsewhere must not rewrite it mid-copy.
    with file_lock(movie.lock, timeout_s=lock_timeout_s):
        return _publish(movie, catalogue)


def _publish(movie: MovieLayout, catalogue: CatalogueLayout) -> dict[str, int]:
    movie_id = movie.movie_id
    stamp = source_stamp(movie)
    if stamp is None:
        raise StageError(
            f"{movie.manifest}: movie {movie_id} has no completed clusters stage; run "
            f"`vcn run` (or `vcn ingest`) on it before publishing it to {catalogue.root}"
        )
    meta = {"vcn": json.dumps({"movie_id": movie_id, "source": stamp})}
    rows: dict[str, int] = {}
    for table in TABLES:
        data = pq.read_table(getattr(movie, table)).replace_schema_metadata(meta)
        write_parquet(catalogue.partition(table, movie_id), data)
        rows[table] = data.num_rows
    # A movie's cluster count excludes the "unknown" bucket, as in the run summary.
    clusters = pq.read_table(movie.clusters, columns=["cluster_id"])["cluster_id"].to_pylist()
    counts = {**rows, "clusters": sum(c != schemas.UNKNOWN for c in clusters)}
    row = pa.Table.from_pydict(_movie_row(movie, read_manifest(movie), counts), schema=MOVIES_SCHEMA)
    write_parquet(catalogue.partition(MOVIES, movie_id), row.replace_schema_metadata(meta))
    return rows
