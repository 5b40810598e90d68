"""The review API: label, merge, split and reject, by the ids the report and the library show.

Each call resolves its ids to tracks (``vcn.storage.corrections.resolve``), appends one correction to
the library's log (``OUT/library/corrections``) and refreshes the library's identities, which
show it at once (names, identities joined or split across titles). A title's own clusters show a
merge, a split or a reject from its next clusters run on: the correction makes that stage stale,
so the next ``vcn ingest`` re-clusters the title with the whole log applied (``vcn rerun
OUT/<movie_id> --from clusters`` does it now); the result names the titles concerned.

    from vcn.tasks.review import label, merge, split, reject
    label("out", "id_00003", "Ada Lovelace")
    merge("out", "3b44...:person_002", "3b44...:person_005")
    split("out", "3b44...:person_001", off=["3b44...:c00000-t00012"])
    reject("out", "3b44...:person_009")
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from vcn.errors import InputError
from vcn.library.corrections import Correction, TrackRef
from vcn.storage.corrections import append, resolve
from vcn.storage.layout import MovieLayout
from vcn.tasks.identities import update_identities


def _tracks(out: str, targets: list[str]) -> list[list[TrackRef]]:
    return [resolve(out, t) for t in targets]


def _record(out_dir: str, kind: str, groups: list[list[TrackRef]], said: str, name: str | None = None,
            user: str | None = None) -> dict[str, Any]:
    out = str(Path(out_dir).resolve())
    c: Correction = append(out, kind, groups, said, name=name, user=user)
    identities = None
    if (Path(out) / "catalogue").is_dir():
        identities = update_identities(out)
    titles = sorted({m for m, _ in c.tracks()})
    return {"correction": c.to_dict(), "titles": titles, "identities": identities,
            "rerun": [str(MovieLayout.of(out, m).root) for m in titles] if kind != "label" else []}


def label(out_dir: str, target: str | list[str], name: str, user: str | None = None) -> dict[str, Any]:
    """Name the person ``target`` (one id or several) names."""
    targets = [target] if isinstance(target, str) else list(target)
    tracks = [t for g in _tracks(out_dir, targets) for t in g]
    return _record(out_dir, "label", [tracks], f"label {' '.join(targets)} {name!r}", name=name, user=user)


def merge(out_dir: str, *targets: str, user: str | None = None) -> dict[str, Any]:
    """Say the ``targets`` (two or more) are one person."""
    if len(targets) < 2:
        raise InputError("vcn merge: name two or more identities, clusters or tracks to merge")
    return _record(out_dir, "merge", _tracks(out_dir, list(targets)), f"merge {' '.join(targets)}", user=user)


def split(out_dir: str, *targets: str, off: list[str] | None = None,
          user: str | None = None) -> dict[str, Any]:
    """Say the ``targets`` are different people; with ``off``, that those tracks are not the
    same person as the rest of the one target."""
    if off:
        if len(targets) != 1:
            raise InputError("vcn split --off: name the one cluster or identity the tracks are split off")
        part = {t for g in _tracks(out_dir, off) for t in g}
        rest = [t for t in resolve(out_dir, targets[0]) if t not in part]
        if not rest:
            raise InputError(f"vcn split: {' '.join(off)} is all of {targets[0]}; nothing is left to "
                             "split from")
        return _record(out_dir, "split", [rest, sorted(part)], f"split {targets[0]} --off {' '.join(off)}",
                       user=user)
    if len(targets) < 2:
        raise InputError("vcn split: name two or more ids that are different people, or one id and "
                         "--off TRACKS")
    return _record(out_dir, "split", _tracks(out_dir, list(targets)), f"split {' '.join(targets)}", user=user)


def reject(out_dir: str, *targets: str, user: str | None = None) -> dict[str, Any]:
    """Say the ``targets`` are nobody: no face, or no one worth a cluster; they become unknown."""
    if not targets:
        raise InputError("vcn reject: name the identities, clusters or tracks to reject")
    tracks = [t for g in _tracks(out_dir, list(targets)) for t in g]
    return _record(out_dir, "reject", [tracks], f"reject {' '.join(targets)}", user=user)


def format_review(result: dict[str, Any]) -> str:
    c = result["correction"]
    n = sum(len(g) for g in c["groups"])
    lines = [f"vcn: {c['kind']} logged as {c['id']} by {c['user']}: {n} tracks of {len(result['titles'])} "
             f"title(s)"]
    if result["identities"]:
        lines.append(f"  identities updated: {result['identities']['output']}")
    for folder in result["rerun"]:
        lines.append(f"  the title's clusters show it after its next clustering (next `vcn ingest`, or now: "
                     f"vcn rerun {folder} --from clusters)")
    return "\n".join(lines)

