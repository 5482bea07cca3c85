"""The automation end to end: ``dagster-daemon run`` on a real instance, nobody asking.

The manifest turns automation on (``"automation": true``), so the clip sensor and the
automation sensor start RUNNING. The test only edits files and reads the instance: new clips are
registered and computed in batches, the enriched table is written once; a clip rewritten in
place is recomputed; a run that fails (its key names no clip of the table yet) is requested
again once the table names the clip; the enriched
table is refreshed once after all of it, and then nothing more is requested. A wait fails as a
stall when the automation keeps ticking with nothing queued, running, waiting for a retry or
backfilling and no new event (however slow the machine), with what the automation decided last.

The instance runs without ``run_retries``: those are Dagster's, not the automation's, and under
load its retry daemon once left a failed run "waiting to retry" for good (a CI run waited out
the deadline on it), which would make this test about Dagster's daemon rather than ours.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import dagster as dg
import pytest
from dagster._core.execution.backfill import BulkActionsFilter, BulkActionStatus
from dagster_support import write_corpus
from support.clips import make_clip
from support.services import Service

REPO_ROOT = Path(__file__).resolve().parents[1]
CLIPS = dg.AssetKey(["saliency", "t", "clip_saliency"])
ENRICHED = dg.AssetKey(["saliency", "t", "enriched_table"])
SOURCE = dg.AssetKey(["saliency", "t", "source_table"])
SENSORS = ("saliency_t_clip_sensor", "saliency_t_automation")
PARTITIONS = "saliency_t_clips"
# Idle this long and this many ticks of each sensor with the work unfinished: a stall (a slow
# machine starting the daemon is not one), failed with what the automation decided last.
STALL_S, STALL_TICKS = 60, 5
DEADLINE_S = 900  # still unfinished after this long: requests that never end
QUIET_TICKS = 3  # ticks of both sensors after the clips settled, in which nothing may be requested
UNFINISHED = (  # a run in one of these is work in progress
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
    dg.DagsterRunStatus.CANCELING,
)


def write_manifest(folder: Path) -> Path:
    manifest = folder / "manifest.json"
    entry = {
        "id": "t",
        "input": "features.jsonl",
        "output": "out/features.saliency.jsonl",
        "root": "clips",
        "max_frames": 2,
        "dagster": {"clips_per_run": 2, "sensor_interval_s": 2, "automation": True},
    }
    manifest.write_text(json.dumps({"tables": [entry]}))
    return manifest


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    home = tmp_path / "dagster_home"
    home.mkdir()
    shipped = (REPO_ROOT / "dagster.yaml").read_text()
    assert "run_retries:\n  enabled: true" in shipped
    (home / "dagster.yaml").write_text(
        shipped.replace("run_retries:\n  enabled: true", "run_retries:\n  enabled: false")
    )
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


def wait_for(what: str, condition, instance, daemon: Service, idle_is_stall=True) -> None:
    """Poll ``condition``; fail when the automation stalls or never ends."""
    watch = StallWatch(instance)
    while not condition():
        daemon.check_alive()
        stalled = idle_is_stall and watch.stalled()
        if stalled or watch.elapsed() > DEADLINE_S:
            kind = "stalled" if stalled else "no end"
            report = f"{state(instance)}\n{daemon.log_tail()}"
            raise AssertionError(f"{kind} waiting for {what}\n{report}")
        time.sleep(1)


class StallWatch:
    """A stall: for STALL_S and STALL_TICKS ticks of each sensor, no new event and nothing
    queued, running, waiting for a retry or backfilling (a slow machine still starting the
    daemon, or running a step, is not one)."""

    def __init__(self, instance) -> None:
        self.instance = instance
        self.started = time.monotonic()
        self.event, self.since, self.ticks = None, self.started, 0

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def stalled(self) -> bool:
        event = self.instance.event_log_storage.get_maximum_record_id()
        evaluated = min(ticks(self.instance, name) for name in SENSORS)
        if event != self.event or busy(self.instance):
            self.event, self.since, self.ticks = event, time.monotonic(), evaluated
        idle = time.monotonic() - self.since
        return idle > STALL_S and evaluated - self.ticks >= STALL_TICKS


def busy(instance) -> bool:
    """Runs queued or running or about to be retried, or a backfill still submitting runs."""
    unfinished = instance.get_runs(filters=dg.RunsFilter(statuses=list(UNFINISHED)), limit=1)
    failed = instance.get_runs(filters=dg.RunsFilter(statuses=[dg.DagsterRunStatus.FAILURE]))
    backfilling = instance.get_backfills(
        filters=BulkActionsFilter(statuses=[BulkActionStatus.REQUESTED]), limit=1
    )
    return bool(unfinished or backfilling) or any(
        run.is_complete_and_waiting_to_retry for run in failed
    )


def state(instance) -> str:
    """Runs, clip partitions and the automation's last decision per asset: a stall's evidence."""
    lines = [
        f"run {run.run_id[:8]} {run.job_name} {run.status.value} "
        f"{ {k: v for k, v in run.tags.items() if not k.startswith('.dagster')} }"
        for run in instance.get_runs()
    ]
    lines.append(f"materialized clips: {sorted(instance.get_materialized_partitions(CLIPS))}")
    for key in (CLIPS, ENRICHED):
        for record in instance.schedule_storage.get_auto_materialize_asset_evaluations(key, 1):
            evaluation = record.get_evaluation_with_run_ids().evaluation
            lines.append(f"last evaluation {record.evaluation_id} of {key.to_user_string()}:")
            lines += [f"  {label}: {value}" for label, value in decisions(evaluation)]
    return "\n".join(lines)


def decisions(evaluation, depth: int = 0):
    """(label, true subset) of an evaluation and its named sub-conditions, outermost first."""
    label = evaluation.condition_snapshot.label
    if label or depth == 0:
        yield "  " * depth + (label or "condition"), evaluation.true_subset.value
    for child in evaluation.child_evaluations:
        yield from decisions(child, depth + 1)


def ticks(instance, sensor: str) -> int:
    states = [s for s in instance.all_instigator_state() if s.instigator_name == sensor]
    return sum(len(instance.get_ticks(s.instigator_origin_id, s.selector_id)) for s in states)


def materializations(instance, key, partition=None) -> list:
    records_filter = dg.AssetRecordsFilter(
        asset_key=key, asset_partitions=None if partition is None else [partition]
    )
    return instance.fetch_materializations(records_filter, limit=1000).records


def version(instance, partition: str) -> str | None:
    records = materializations(instance, CLIPS, partition)
    return records[0].asset_materialization.tags["dagster/data_version"] if records else None


def failed_runs(instance, partition: str) -> list:
    """The failed runs of one clip partition (alone or as a one-clip range), oldest first."""
    failed = instance.get_runs(filters=dg.RunsFilter(statuses=[dg.DagsterRunStatus.FAILURE]))
    return [
        run
        for run in reversed(failed)
        if partition
        in (run.tags.get("dagster/partition"), run.tags.get("dagster/asset_partition_range_start"))
    ]


def refreshes_after_inputs(instance) -> list:
    """The enriched table's materializations after the latest clip and source ones."""
    inputs = [
        record.storage_id for key in (CLIPS, SOURCE) for record in materializations(instance, key)
    ]
    return [
        record for record in materializations(instance, ENRICHED) if record.storage_id > max(inputs)
    ]


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
        # does): its run fails naming the key; once the table names the clip, the clip sensor
        # requests it again.
        instance.add_dynamic_partitions(PARTITIONS, ["d.mp4"])
        wait_for(
            "the failed run of d.mp4",
            lambda: len(failed_runs(instance, "d.mp4")) == 1 and not busy(instance),
            instance,
            daemon,
        )
        write_corpus(corpus, clip_names=("a.mp4", "b.mp4", "c.mp4", "d.mp4"))
        wait_for(
            "d.mp4 computed, b.mp4 recomputed, the table refreshed after them",
            lambda: (
                "d.mp4" in instance.get_materialized_partitions(CLIPS)
                and version(instance, "b.mp4") != b_before
                and not busy(instance)
                and refreshes_after_inputs(instance)
            ),
            instance,
            daemon,
        )
        # Refreshed as often as the ticks fell while runs came and went, then once after the
        # last clip and source update.
        assert len(refreshes_after_inputs(instance)) == 1, state(instance)
        runs = len(instance.get_runs())
        # A few more ticks of both sensors: nothing else may be requested once all is done.
        quiet = {name: ticks(instance, name) + QUIET_TICKS for name in SENSORS}
        wait_for(
            "more sensor ticks",
            lambda: all(ticks(instance, name) >= count for name, count in quiet.items()),
            instance,
            daemon,
            idle_is_stall=False,
        )
        assert len(instance.get_runs()) == runs, state(instance)
        rows = (corpus / "out" / "features.saliency.jsonl").read_text().splitlines()
        assert {json.loads(row)["saliency_status"] for row in rows} == {"ok"}
        assert len(rows) == 8


def test_the_shipped_instance_frees_a_pool_slot_a_finished_run_still_holds(home, monkeypatch):
    """A run that ended holding its "saliency_model" slot must not block later clip runs: the
    monitoring daemon's slot pass frees it (the daemon's clock moved past the grace period)."""
    import datetime
    import logging
    from types import SimpleNamespace

    from dagster._daemon.monitoring import concurrency

    with dg.DagsterInstance.get() as instance:
        grace = instance.run_monitoring_settings["free_slots_after_run_end_seconds"]
        run = instance.create_run_for_job(dg.GraphDefinition("noop").to_job())
        instance.report_run_failed(run)  # ended, as a crashed or killed run does
        storage = instance.event_log_storage
        storage.set_concurrency_slots("saliency_model", 1)
        assert storage.claim_concurrency_slot("saliency_model", run.run_id, "s").is_claimed
        assert storage.get_concurrency_info("saliency_model").active_slot_count == 1
        later = datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=grace + 60)
        monkeypatch.setattr(concurrency, "get_current_datetime", lambda: later)
        list(
            concurrency.execute_concurrency_slots_iteration(
                SimpleNamespace(instance=instance), logging.getLogger("test")
            )
        )
        assert storage.get_concurrency_info("saliency_model").active_slot_count == 0
