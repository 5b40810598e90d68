"""The corrections log of a library: ``OUT/library/corrections/``, one JSON file per correction.

The log is append-only and safe for several reviewers at once without a lock: each correction
is its own file, written atomically (a temporary name, then a rename) under a name nobody else
can pick (its time and a random id), so concurrent appends never overwrite each other and a
crash leaves no half-written entry. Reading lists the files in time order.
"""

from __future__ import annotations

import getpass
import json
import os
import re
import secrets
from datetime import UTC, datetime
from pathlib import Path

from vcn.errors import InputError
from vcn.library.corrections import Correction, TrackRef
from vcn.storage.atomic import read_json, write_json
from vcn.storage.identities import LibraryLayout

TRACK_ID = re.compile(r"[0-9a-f]{16}-c\d+-t\d+")


def corrections_dir(out_dir: str | Path) -> Path:
    return LibraryLayout.of(out_dir).root / "corrections"


def default_user() -> str:
    try:
        return os.environ.get("VCN_USER") or getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def append(out_dir: str | Path, kind: str, groups: list[list[TrackRef]], said: str,
           name: str | None = None, user: str | None = None) -> Correction:
    """Add one correction to the library's log and return it."""
    now = datetime.now(UTC)
    cid = f"{now.strftime('%Y%m%dT%H%M%S%fZ')}-{secrets.token_hex(4)}"
    c = Correction(id=cid, time=now.isoformat(timespec="microseconds"), user=user or default_user(),
                   kind=kind, said=said, groups=tuple(tuple(g) for g in groups), name=name)
    write_json(corrections_dir(out_dir) / f"{cid}.json", c.to_dict())
    return c


def read_log(out_dir: str | Path) -> list[Correction]:
    """Every correction of the library, in the order they were said (empty when none)."""
    folder = corrections_dir(out_dir)
    if not folder.is_dir():
        return []
    out = []
    for path in sorted(folder.glob("[!.]*.json")):
        try:
            out.append(Correction.from_dict(read_json(path)))
        except (OSError, ValueError, KeyError, TypeError, json.JSONDecodeError) as exc:
            raise InputError(f"{path}: not a vcn correction ({exc}); move it out of {folder}") from exc
    return sorted(out, key=lambda c: (c.time, c.id))


def _title_tracks(out_dir: Path, movie_id: str) -> tuple[list[str], list[str]]:
    import pyarrow.parquet as pq

    from vcn.storage.catalogue import CatalogueLayout
    from vcn.storage.layout import MovieLayout

    path = MovieLayout.of(out_dir, movie_id).tracks
    if not path.exists():  # a title whose folder is elsewhere: its catalogue copy
        path = CatalogueLayout.of(out_dir).partition("tracks", movie_id)
    if not path.exists():
        raise InputError(f"{path}: no such title output; name a title by the movie id the report shows "
                         f"(a folder of {out_dir})")
    t = pq.read_table(path, columns=["track_id", "cluster_id"])
    return t.column("track_id").to_pylist(), t.column("cluster_id").to_pylist()


def resolve(out_dir: str | Path, target: str) -> list[TrackRef]:
    """The tracks a reviewer's id names, as they are now: ``id_NNNNN`` (a library identity, see
    ``identities.parquet``), ``MOVIE_ID:person_NNN`` (a title's cluster), ``MOVIE_ID:TRACK_ID``
    or the track id alone (one track; a track id starts with its title's movie id). Raises
    :class:`InputError` with the accepted forms when it names nothing."""
    import pyarrow.parquet as pq

    out = Path(out_dir)
    forms = "use id_NNNNN (an identity), MOVIE_ID:person_NNN (a cluster) or MOVIE_ID:TRACK_ID (a track)"
    if target.startswith("id_"):
        members = LibraryLayout.of(out).members
        if not members.exists():
            raise InputError(f"{members}: no identities yet; run `vcn identities {out}` first")
        m = pq.read_table(members, columns=["movie_id", "cluster_id", "identity_id"]).to_pylist()
        clusters = [(r["movie_id"], r["cluster_id"]) for r in m if r["identity_id"] == target]
        if not clusters:
            raise InputError(f"{target}: no such identity in {members}; {forms}")
        refs: list[TrackRef] = []
        for movie_id in sorted({mv for mv, _ in clusters}):
            tracks, cl = _title_tracks(out, movie_id)
            mine = {c for mv, c in clusters if mv == movie_id}
            refs += [(movie_id, t) for t, c in zip(tracks, cl, strict=True) if c in mine]
        return refs
    movie_id, sep, what = target.partition(":")
    if not sep and TRACK_ID.fullmatch(target):  # a track id starts with its title's movie id
        movie_id, sep, what = target.split("-", 1)[0], ":", target
    if not sep or not what:
        raise InputError(f"{target!r}: not an id of {out}; {forms}")
    tracks, cl = _title_tracks(out, movie_id)
    if what in tracks:
        return [(movie_id, what)]
    refs = [(movie_id, t) for t, c in zip(tracks, cl, strict=True) if c == what]
    if not refs:
        raise InputError(f"{target}: title {movie_id} has no cluster or track {what!r}; {forms}")
    return refs
