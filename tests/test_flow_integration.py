"""The whole per-movie flow on a real clip, under a real Prefect server and a real Dask cluster."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from vcn.flows.cli import main as vcn_main
from vcn.manifest import Manifest
from vcn.storage.layout import MovieLayout
from vcn.storage.manifest import read_manifest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "samples" / "short_hamilton_clip.mp4"
GT = SAMPLE.with_name("hamilton.faces.csv")




@pytest.fixture(scope="module")
def bad_inputs(tmp_path_factory, faststart_cut) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("bad")
    zero = d / "zero.mp4"
    zero.write_bytes(b"")
    text = d / "notes.mp4"
    text.write_text("this is not a video\n" * 50)
    truncated = d / "truncated.mp4"
    truncated.write_bytes(SAMPLE.read_bytes()[: SAMPLE.stat().st_size // 3])
    # An interrupted download of a faststart MP4: the header declares all 275 frames, 115 decode.
    cut = faststart_cut(SAMPLE, d / "cut.mp4", 200_000)
    return {"missing": d / "missing.mp4", "zero": zero, "text": text, "truncated": truncated, "cut": cut}


@pytest.fixture(scope="module")
def batch_run(prefect_server, tmp_path_factory, bad_inputs):
    """``vcn run`` on the good clip and the bad inputs, as a user runs it: a process of its own
    (stderr not a terminal), reporting to the test's Prefect server. Returns the exit code, the
    output folder, the JSON summary, the good clip and what the command printed."""
    out = tmp_path_factory.mktemp("out")
    video = tmp_path_factory.mktemp("in") / "hamilton.mp4"
    shutil.copy(SAMPLE, video)
    summary = out / "summary.json"
    env = {k: v for k, v in os.environ.items() if k != "VCN_VERBOSE"}
    bad = [str(bad_inputs[k]) for k in ("missing", "zero", "text", "truncated", "cut")]
    proc = subprocess.run([
        sys.executable, "-m", "vcn.flows.cli", "run", str(video), *bad, "--out", str(out), "--workers", "2",
        "--method", "hac", "--chunk-seconds", "3", "--json", str(summary),
    ], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600, check=False)
    return proc.returncode, out, json.loads(summary.read_text()), video, proc.stdout + proc.stderr


def test_batch_reports_bad_inputs_and_finishes_good_one(batch_run, bad_inputs):
    code, _, summary, _, _ = batch_run
    assert code == 1, "a batch with failures must exit non-zero"
    assert len(summary["ok"]) == 1
    failed = summary["failed"]
    assert set(failed) == {str(p) for p in bad_inputs.values()}
    for path, why in failed.items():
        assert Path(path).name in why, f"error for {path} must name the file: {why}"
    cut = failed[str(bad_inputs["cut"])]
    assert "truncated: only 115 of the 275 frames the container declares decode" in cut


def test_bad_inputs_print_one_line_each_and_no_traceback(batch_run, bad_inputs):
    *_, printed = batch_run
    assert "Traceback" not in printed, printed
    reasons = {"missing": "no such file", "zero": "the file is empty", "text": "not a readable video",
               "truncated": "not a readable video container, or truncated",
               "cut": "truncated: only 115 of the 275 frames"}
    fixes = ("check the path", "download it again", "re-download", "Re-download", "re-mux")
    for kind, path in bad_inputs.items():
        # One line names the file, says what is wrong with it and the fix.
        lines = [line for line in printed.splitlines() if path.name in line and reasons[kind] in line]
        assert any(fix in line for line in lines for fix in fixes), f"no one-line reason for {path.name}"


def test_bad_inputs_fail_their_flow_runs_with_the_line_as_state_message(batch_run, bad_inputs):
    """In the Prefect UI each bad file's ``process-movie`` run ends *Failed* with the same one
    line (the file, what is wrong, the fix) as its state message; the good clip's completes."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterName

    _, _, summary, video, _ = batch_run
    names = {f"process-movie-{p}": str(p) for p in [*bad_inputs.values(), video]}
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(flow_run_filter=FlowRunFilter(name=FlowRunFilterName(any_=list(names))))
    state = {names[r.name]: r.state for r in runs}
    assert set(state) == set(names.values()), sorted(state)
    assert state[str(video)].is_completed()
    for path in bad_inputs.values():
        run_state = state[str(path)]
        assert run_state.is_failed(), (path.name, run_state)
        assert run_state.message == summary["failed"][str(path)], (path.name, run_state.message)
        assert path.name in run_state.message and "\n" not in run_state.message and \
            "Traceback" not in run_state.message


def test_console_shows_vcn_lines_not_library_logs(batch_run, bad_inputs):
    *_, printed = batch_run
    lines = printed.splitlines()
    assert len(lines) < 40, printed
    assert not [line for line in lines if "distributed." in line or " INFO " in line], printed
    # Progress shows without a terminal: the stage's start and end and its chunks.
    assert any("hamilton.mp4: tracks: 3/3 chunks (100 %)" in line for line in lines), printed
    assert any("hamilton.mp4: tracks done in" in line for line in lines), printed
    assert any("hamilton.mp4: clusters done in" in line for line in lines), printed
    # A bad file is named only on lines that say what is wrong with it: no Prefect state line,
    # no flow run named after it.
    for path in bad_inputs.values():
        named = [line for line in lines if path.name in line]
        assert named and all("FAILED" in line for line in named), named


def test_verbose_restores_library_logs_and_tracebacks(prefect_server, bad_inputs, tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("VCN_VERBOSE", "DASK_LOGGING__DISTRIBUTED")}
    proc = subprocess.run([sys.executable, "-m", "vcn.flows.cli", "run", str(bad_inputs["zero"]), "--out",
                           str(tmp_path / "out"), "--workers", "1", "--verbose"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 1
    printed = proc.stdout + proc.stderr
    assert "Traceback" in printed and "VideoOpenError" in printed
    assert "Beginning flow run" in printed and "distributed.scheduler" in printed


def test_outputs_follow_the_contract(batch_run):
    _, out, summary, _, _ = batch_run
    result = summary["ok"][0]
    layout = MovieLayout(Path(result["output"]))
    assert layout.root.parent == out
    faces = pq.read_table(layout.faces).to_pandas()
    tracks = pq.read_table(layout.tracks).to_pandas()
    shots = pq.read_table(layout.shots).to_pandas()
    clusters = pq.read_table(layout.clusters).to_pandas()
    assert len(faces) > 50 and len(tracks) >= 4
    # Several chunks (3 s each on a 9 s clip): stitched tracks are unique and reference real shots.
    assert result["chunks"] >= 3
    assert set(faces["track_id"]) == set(tracks["track_id"])
    assert faces["shot_id"].between(0, len(shots) - 1).all()
    assert 3 <= len(shots) <= 6, "the clip has 4 shots"
    emb = np.stack(faces["embedding"].to_numpy())
    assert emb.shape[1] == 512 and np.allclose(np.linalg.norm(emb, axis=1), 1, atol=1e-3)
    assert set(faces["cluster_id"]) <= set(clusters["cluster_id"])
    assert clusters["n_faces"].sum() == len(faces)
    written = json.loads(layout.manifest.read_text())
    for key in ("input", "code", "packages", "models", "config", "stages"):
        assert key in written
    manifest = Manifest.from_json(written)
    assert manifest.to_json() == written, "the typed manifest writes back what the run wrote"
    assert manifest.stages["tracks"].status == "completed"
    # The embeddings' precision is recorded as the workers' engines ran it.
    assert manifest.stages["tracks"].extra["recognizer_precision"] in (["bf16"], ["f32"])
    assert manifest.stages["clusters"].flow_run_id


def test_eval_on_the_labelled_clip(batch_run, capsys):
    _, _, summary, _, _ = batch_run
    json_out = Path(summary["ok"][0]["output"]) / "eval.json"
    pred = summary["ok"][0]["output"]
    assert vcn_main(["eval", "--gt", str(GT), "--pred", pred, "--json", str(json_out)]) == 0
    report = json.loads(json_out.read_text())
    assert report["coverage"] > 0.8
    assert report["wcp"] > 0.9


def test_rerun_reuses_finished_chunks(batch_run, prefect_server):
    _, out, summary, video, _ = batch_run
    layout = MovieLayout(Path(summary["ok"][0]["output"]))
    # A lost chunk and a lost stage output: the stage re-runs, reusing the other chunks.
    layout.chunk_faces(1).unlink()
    layout.faces.unlink()
    again = out / "again.json"
    assert vcn_main(["run", str(video), "--out", str(out), "--workers", "1", "--method", "hac",
                     "--chunk-seconds", "3", "--json", str(again)]) == 0
    rows = json.loads(again.read_text())["ok"][0]
    assert rows["chunks_computed"] == 1, "only the deleted chunk is recomputed"
    assert rows["faces"] == summary["ok"][0]["faces"]
    assert rows["stages_run"] == {"tracks": True, "clusters": True}
    # Nothing lost: a second re-run does nothing at all.
    assert vcn_main(["rerun", str(layout.root), "--workers", "1"]) == 0


def test_vcn_method_finetunes_and_clusters(prefect_server, tmp_path, capsys, short_finetune):
    """The default method end to end with a tiny CPU finetune budget: the weights change, the
    checkpoint and the lineage are recorded, every track gets a cluster or ``unknown``."""
    import torch

    from vcn.storage.checkpoints import load_checkpoint

    out = tmp_path / "out"
    summary = tmp_path / "s.json"
    config = {**short_finetune, "method": {**short_finetune["method"], "finetune": {
        **short_finetune["method"]["finetune"], "checkpoint_every": 4}}}
    # No --method: the default is vcn. Run as a user runs it, to see what it prints.
    proc = subprocess.run([sys.executable, "-m", "vcn.flows.cli", "run", str(SAMPLE), "--out", str(out),
                           "--workers", "1", "--config", json.dumps(config), "--json", str(summary)],
                          cwd=ROOT, capture_output=True, text=True, timeout=600, check=False)
    printed = proc.stdout + proc.stderr
    assert proc.returncode == 0, printed
    # `make run`'s console: vcn's lines, the finetune's progress every 10 % of its steps with the
    # time left, and the summary; no library logs.
    lines = printed.splitlines()
    assert len(lines) < 40, printed
    steps = [line for line in lines if "short_hamilton_clip.mp4: finetune round 1: " in line]
    assert len(steps) >= 3 and "left" in steps[0] and "(100 %)" in steps[-1], printed
    assert "1 video(s) done, 0 failed" in printed
    result = json.loads(summary.read_text())["ok"][0]
    layout = MovieLayout(Path(result["output"]))
    written = json.loads(layout.manifest.read_text())
    manifest = Manifest.from_json(written)
    assert manifest.to_json() == written, "the typed manifest writes back what the run wrote"
    ft = manifest.stages["finetune"]
    assert ft.status == "completed" and ft.extra["checkpoint_blake2b"]
    assert set(ft.extra["seconds"]) == {"inputs", "view_bank", "adapt"}, "the stage's time, part by part"
    assert all(v >= 0 for v in ft.extra["seconds"].values()) and ft.extra["seconds"]["adapt"] > 0
    # One title in flight: its finetune uses every core, though the worker starts with one thread.
    assert ft.rows["torch_threads"] == os.cpu_count()
    clusters = manifest.stages["clusters"].extra
    assert clusters["method"] == "vcn"
    # Stage 4 runs on a worker too (one thread there), with the title's share of the cores.
    assert clusters["torch_threads"] == os.cpu_count() and clusters["device"] == "cpu"
    assert ft.extra["device"] == "cpu"
    ck = load_checkpoint(layout.model_dir / "final.pt")
    assert ck is not None and ck.state is not None and ck.state.step == 16
    adapter = ck.state.student_adapter["linear.weight"]
    assert not torch.allclose(adapter, torch.eye(adapter.shape[0])), "the joint stage must train the adapter"
    bank = np.load(layout.model_dir / "views.npz", allow_pickle=False)
    assert bank["match"].shape[:3] == (3, len(bank["quality"]), 2), "three draws of two matching views"
    tracks = pq.read_table(layout.tracks).to_pandas()
    assert (tracks["cluster_id"] != "").all() and tracks["quality"].notna().all()
    assert result["clusters"] >= 2
    # Two tracks with faces on one frame are two people: never one cluster (vcn/method/constraints.py).
    faces = pq.read_table(layout.faces).to_pandas()
    on_frame = faces[faces["cluster_id"] != "unknown"].groupby("frame_idx")
    together = on_frame.agg(tracks=("track_id", "nunique"), clusters=("cluster_id", "nunique"))
    assert (together["tracks"] > 1).any(), "the sample clip has people seen together"
    assert (together["tracks"] == together["clusters"]).all()
    assert ft.rows["cannot_link_pairs"] == clusters["cannot_link_pairs"] > 0
    # Stage 4 starts from the groups coarse matching made, and merges from there.
    stage4 = clusters
    assert result["clusters"] <= stage4["start_groups"] <= len(tracks)
    assert 0 <= stage4["lone_tracks_lifted"] <= stage4["start_groups"]
    assert 0 <= stage4["lone_tracks_held"] <= stage4["start_groups"] - stage4["lone_tracks_lifted"]


def test_vct_method_trains_on_the_title_and_clusters(prefect_server, tmp_path):
    """``vcn run --method vct`` with a short CPU training: the clusters stage trains the sequence
    transformer on the clip's own tracks, records it, and keeps co-occurring tracks apart."""
    out = tmp_path / "out"
    summary = tmp_path / "s.json"
    config = {"cluster": {"vct": {"min_steps": 30, "max_steps": 30}}}
    proc = subprocess.run([sys.executable, "-m", "vcn.flows.cli", "run", str(SAMPLE), "--out", str(out),
                           "--workers", "1", "--method", "vct", "--config", json.dumps(config),
                           "--json", str(summary)],
                          cwd=ROOT, capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = json.loads(summary.read_text())["ok"][0]
    layout = MovieLayout(Path(result["output"]))
    manifest = read_manifest(layout)
    assert "finetune" not in manifest.stages
    clusters = manifest.stages["clusters"].extra
    assert clusters["method"] == "vct" and clusters["vct_steps"] == 30
    assert np.isfinite(clusters["vct_final_loss"]) and clusters["vct_seconds"] < 60
    assert clusters["torch_threads"] == os.cpu_count()
    tracks = pq.read_table(layout.tracks).to_pandas()
    assert (tracks["cluster_id"] != "").all() and tracks["quality"].notna().all()
    assert result["clusters"] >= 2
    faces = pq.read_table(layout.faces).to_pandas()
    on_frame = faces[faces["cluster_id"] != "unknown"].groupby("frame_idx")
    together = on_frame.agg(tracks=("track_id", "nunique"), clusters=("cluster_id", "nunique"))
    assert (together["tracks"] == together["clusters"]).all()
