"""Kill a Dagster run mid-batch, run the batch again: finished clips are not recomputed, the
table equals an uninterrupted run's, and the partitions' statuses say what really happened."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
from conftest import run_cli_in_process
from dagster_support import check_metadata, load_defs, range_tags, run_job
from support.clips import make_clip

CLIPS = [f"clip{index:02d}.mp4" for index in range(10)]


def write_slow_corpus(folder):
    """Clips slow enough that the run outlasts the results store's first flush (every
    FLUSH_EVERY_S) by several seconds, so the kill always lands mid-batch."""
    (folder / "clips").mkdir(parents=True)
    for index, name in enumerate(CLIPS):
        make_clip(folder / "clips" / name, 1280 + 16 * index, 720, 8)
    rows = [{"src": name, "frame": frame} for name in CLIPS for frame in range(2)]
    (folder / "features.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))


def write_manifest(folder, output):
    entry = {
        "id": "t",
        "input": str(folder / "features.jsonl"),
        "output": str(output),
        "root": str(folder / "clips"),
        "jobs": 1,
        "dagster": {"clips_per_run": 0, "storage": str(folder / "storage")},
    }
    manifest = folder / "manifest.json"
    manifest.write_text(json.dumps({"tables": [entry]}))
    return manifest


def stored_clip_names(folder):
    import pyarrow.parquet as pq

    return {
        Path(key).name
        for part in stored_parts(folder)
        for key in pq.read_table(part, columns=["clip_key"]).column("clip_key").to_pylist()
    }


def stored_parts(folder):
    results = folder / "storage" / "t" / "results"
    return sorted(results.glob("part-*.parquet")) if results.is_dir() else []


def kill_run_after_first_results(folder, home, manifest):
    env = {**os.environ, "DAGSTER_HOME": str(home), "SALIENCY_ASSETS_MANIFESTS": str(manifest)}
    command = [
        sys.executable,
        "-m",
        "dagster",
        "job",
        "execute",
        "-m",
        "saliency_assets.definitions",
        "-j",
        "saliency_t_clips",
        "--tags",
        json.dumps(range_tags(CLIPS[0], CLIPS[-1])),
    ]
    process = subprocess.Popen(
        command,
        env=env,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 240
    while not stored_parts(folder) and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert process.poll() is None, "the run finished before it could be killed"
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def test_killed_run_resumes_without_recomputing(tmp_path, monkeypatch):
    corpus, home = tmp_path / "corpus", tmp_path / "home"
    home.mkdir()
    write_slow_corpus(corpus)
    output = corpus / "out.jsonl"
    manifest = write_manifest(corpus, output)
    with dg.instance_for_test(temp_dir=str(home)) as instance:
        defs = load_defs(monkeypatch, manifest)
        run_job(defs, "saliency_t_refresh", instance)
    kill_run_after_first_results(corpus, home, manifest)

    with dg.instance_for_test(temp_dir=str(home)) as instance:
        killed = instance.get_runs(filters=dg.RunsFilter(job_name="saliency_t_clips"))[0]
        assert killed.status != dg.DagsterRunStatus.SUCCESS
        clip_key = dg.AssetKey(["saliency", "t", "clip_saliency"])
        # The UI may only show a partition as materialized if its result really exists.
        assert instance.get_materialized_partitions(clip_key) <= stored_clip_names(corpus)
        assert not output.exists()

        defs = load_defs(monkeypatch, manifest)
        rerun = run_job(defs, "saliency_t_clips", instance, tags=range_tags(CLIPS[0], CLIPS[-1]))
        batch = check_metadata(rerun, "status_contract")
        assert batch["reused_clips"] > 0
        assert batch["computed_clips"] == len(CLIPS) - batch["reused_clips"]
        assert instance.get_materialized_partitions(clip_key) == set(CLIPS)
        run_job(defs, "saliency_t_enrich", instance)
    resumed = output.read_text()

    uninterrupted = corpus / "uninterrupted.jsonl"
    done = run_cli_in_process(
        "materialize", "--input", str(corpus / "features.jsonl"), "--output", str(uninterrupted),
        "--root", str(corpus / "clips"), "--results-store", "none",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert resumed == uninterrupted.read_text()
    assert [p.name for p in output.parent.iterdir() if p.name.startswith(".out.jsonl")] == []
