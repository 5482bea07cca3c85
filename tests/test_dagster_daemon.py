"""The automation end to end: ``dagster-daemon run`` on a real instance, nobody asking.

The manifest turns automation on (``"automation": true``), so the clip sensor and the
automation sensor start RUNNING. The test only edits files and reads the instance: new clips are
registered and computed in batches, the enriched table is written once; a clip rewritten in
place is recomputed; a run that fails (its key named no clip of the table yet) is retried by
``run_retries`` and then succeeds; the enriched table is refreshed once for all of it.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import dagster as dg
import pytest
from dagster_support import write_corpus
from support.clips import make_clip
from support.services import Service

REPO_ROOT = Path(__file__).resolve().parents[1]
CLIPS = dg.AssetKey(["saliency", "t", "clip_saliency"])
ENRICHED = dg.AssetKey(["saliency", "t", "enriched_table"])
PARTITIONS = "saliency_t_clips"
DEADLINE_S = 240  # a stall fails the test with the daemon's log instead of hanging it


def write_manifest(folder: Path) -> Path:
    manifest = folder / "manifest.json"
    entry = {
        "id": "t",
        "input": "features.jsonl",
        "output": "out/features.saliency.jsonl",
        "root": "clips",
        "max_frames": 2,
        "dagster": {"clips_per_run": 2, "sensor_interval_s": 5, "automation": True},
    }
    manifest.write_text(json.dumps({"tables": [entry]}))
    return manifest


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copyfile(REPO_ROOT / "dagster.yaml", home / "dagster.yaml")
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    write_corpus(tmp_path / "corpus", clip_names=("a.mp4", "b.mp4", "c.mp4"))
    monkeypatch.setenv("SALIENCY_ASSETS_MANIFESTS", str(write_manifest(tmp_path / "corpus")))
    with dg.DagsterInstance.get():  # create the storage before two processes race for it
        pass
    return home


@pytest.fixture
def daemon(tmp_path, home):
    workspace = str(REPO_ROOT / "workspace.yaml")
    running = Service("dagster-daemon", ["run", "-w", workspace], tmp_path / "daemon.log")
    try:
        yield running.start()
    finally:
        running.stop()


def wait_for(what: str, condition, instance, daemon: Service):
    deadline = time.monotonic() + DEADLINE_S
    while not condition():
        daemon.check_alive()
        if time.monotonic() > deadline:
            runs = "\n".join(
                f"{run.run_id[:8]} {run.job_name} {run.status.value} {dict(run.tags)}"
                for run in instance.get_runs()
            )
            raise AssertionError(f"stalled waiting for {what}; runs:\n{runs}\n{daemon.log_tail()}")
        time.sleep(1)


def materializations(instance, key, partition=None) -> list:
    records_filter = dg.AssetRecordsFilter(
        asset_key=key, asset_partitions=None if partition is None else [partition]
    )
    return instance.fetch_materializations(records_filter, limit=1000).records


def version(instance, partition: str) -> str | None:
    records = materializations(instance, CLIPS, partition)
    return records[0].asset_materialization.tags["dagster/data_version"] if records else None


def settled(instance) -> bool:
    return not instance.get_runs(
        filters=dg.RunsFilter(
            statuses=[
                dg.DagsterRunStatus.QUEUED,
                dg.DagsterRunStatus.NOT_STARTED,
                dg.DagsterRunStatus.STARTING,
                dg.DagsterRunStatus.STARTED,
            ]
        )
    )


@pytest.mark.xfail(
    strict=False,
    reason="known intermittent stall (issue 10, open): in 1 of 4 full runs the automation "
    "stopped requesting with d.mp4's retry, b.mp4's recompute and the refresh not all done",
)
def test_daemon_computes_new_changed_and_retried_clips_and_refreshes_the_table_once(
    tmp_path, home, daemon
):
    corpus = tmp_path / "corpus"
    with dg.DagsterInstance.get() as instance:
        wait_for(
            "the first enriched table",
            lambda: materializations(instance, ENRICHED),
            instance,
            daemon,
        )
        assert instance.get_materialized_partitions(CLIPS) == {"a.mp4", "b.mp4", "c.mp4"}
        assert len(materializations(instance, ENRICHED)) == 1
        clip_runs = instance.get_runs(filters=dg.RunsFilter(job_name="__ASSET_JOB"))
        assert clip_runs, "clip partitions were computed by the automation's backfill runs"

        b_before = version(instance, "b.mp4")
        make_clip(corpus / "clips" / "b.mp4", 96, 64, 4)  # rewritten in place
        # A partition registered before its clip is in the table (as the UI's "Add partition"
        # does): its run fails naming the key until the table names the clip.
        instance.add_dynamic_partitions(PARTITIONS, ["d.mp4"])
        wait_for(
            "the failed run of d.mp4",
            lambda: instance.get_runs(
                filters=dg.RunsFilter(statuses=[dg.DagsterRunStatus.FAILURE])
            ),
            instance,
            daemon,
        )
        write_corpus(corpus, clip_names=("a.mp4", "b.mp4", "c.mp4", "d.mp4"))
        wait_for(
            "d.mp4 computed by a retry, b.mp4 recomputed, the table refreshed",
            lambda: (
                "d.mp4" in instance.get_materialized_partitions(CLIPS)
                and version(instance, "b.mp4") != b_before
                and len(materializations(instance, ENRICHED)) >= 2
                and settled(instance)
            ),
            instance,
            daemon,
        )
        refreshes = len(materializations(instance, ENRICHED))
        # b's rewrite and d's retried run may land in one refresh or in two, as the ticks fall;
        # never more, and nothing after the clips have settled.
        assert refreshes in (2, 3)
        time.sleep(20)  # a few more automation ticks: nothing else may be requested
        assert settled(instance)
        assert len(materializations(instance, ENRICHED)) == refreshes
        retried = [run for run in instance.get_runs() if "dagster/parent_run_id" in run.tags]
        assert retried and all(run.status == dg.DagsterRunStatus.SUCCESS for run in retried)
        rows = (corpus / "out" / "features.saliency.jsonl").read_text().splitlines()
        assert {json.loads(row)["saliency_status"] for row in rows} == {"ok"}
        assert len(rows) == 8
