"""A Postgres-backed instance with the daemon runs a multi-run asset backfill to completion.

The instance is configured with the repository's ``dagster-postgres.yaml`` verbatim, pointed at
a fresh database created for this test session (and dropped afterwards). The backfill is
submitted the way the UI's "Materialize partitions" dialog does it: the GraphQL mutation
``launchPartitionBackfill`` with an asset selection and partition names, executed against a
workspace loaded from the repository's ``workspace.yaml``. ``dagster-daemon run`` (a subprocess
in its own process group, always killed in teardown) then turns it into runs.

Skipped, with the reason, when no PostgreSQL server accepts connections on
``$PGHOST:$PGPORT`` (default 127.0.0.1:5432; ``scripts/ci-services.sh`` starts it in CI).
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path

import dagster as dg
import pytest
from support.clips import make_clip
from support.postgres import deployment_environment, fresh_database, write_dagster_home
from support.services import Service

REPO_ROOT = Path(__file__).resolve().parents[1]
WORKSPACE = REPO_ROOT / "workspace.yaml"
TABLE = "pgt"
CLIP_NAMES = [f"clip_{index}.mp4" for index in range(6)]
CLIPS_PER_RUN = 2
EXPECTED_RUNS = math.ceil(len(CLIP_NAMES) / CLIPS_PER_RUN)
SOURCE_TABLE = dg.AssetKey(["saliency", TABLE, "source_table"])
CLIP_SALIENCY = dg.AssetKey(["saliency", TABLE, "clip_saliency"])
BACKFILL_TIMEOUT_S = 600  # liveness, not speed: the backfill daemon is slow on a loaded machine
BACKFILL_TAG = "dagster/backfill"

LAUNCH_PARTITION_BACKFILL = """
mutation LaunchPartitionBackfill($backfillParams: LaunchBackfillParams!) {
  launchPartitionBackfill(backfillParams: $backfillParams) {
    __typename
    ... on LaunchBackfillSuccess { backfillId }
    ... on PythonError { message stack }
    ... on PartitionSetNotFoundError { message }
    ... on PartitionKeysNotFoundError { message }
    ... on UnauthorizedError { message }
  }
}
"""


@pytest.fixture(scope="session")
def pg_database():
    """A fresh database on the local server for this test session; dropped at the end."""
    try:
        import dagster_postgres  # noqa: F401
    except ImportError as error:
        pytest.skip(f"dagster-postgres not installed: {error}")
    with fresh_database(f"saliency_assets_test_{os.getpid()}") as database:
        yield database


def write_corpus_and_manifest(folder: Path) -> Path:
    """Six small real clips, a per-frame table naming them, and a manifest with 2 clips/run."""
    clips = folder / "clips"
    clips.mkdir(parents=True)
    rows = []
    for index, name in enumerate(CLIP_NAMES):
        make_clip(clips / name, 48 + 16 * (index % 3), 32 + 8 * (index % 2), 3)
        rows += [{"src": name, "frame": frame} for frame in range(2)]
    (folder / "features.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    manifest = folder / "manifest.json"
    entry = {
        "id": TABLE,
        "input": "features.jsonl",
        "output": "out/features.saliency.jsonl",
        "root": "clips",
        "max_frames": 2,
        "frame_samples": 2,
        "dagster": {"clips_per_run": CLIPS_PER_RUN, "sensor_interval_s": 3600},
    }
    manifest.write_text(json.dumps({"tables": [entry]}))
    return manifest


@pytest.fixture
def pg_home(tmp_path, pg_database, monkeypatch) -> Path:
    """DAGSTER_HOME holding dagster-postgres.yaml, with the DAGSTER_PG_* variables set."""
    home = write_dagster_home(tmp_path / "dagster_home")
    for variable, value in {
        "DAGSTER_HOME": str(home),
        **deployment_environment(pg_database),
        "SALIENCY_ASSETS_MANIFESTS": str(write_corpus_and_manifest(tmp_path / "corpus")),
    }.items():
        monkeypatch.setenv(variable, value)
    return home


@pytest.fixture
def daemon(tmp_path):
    running = Service("dagster-daemon", ["run", "-w", str(WORKSPACE)], tmp_path / "daemon.log")
    try:
        yield running
    finally:
        running.stop()


def launch_backfill_like_the_ui(instance, asset_key: dg.AssetKey, partitions: list[str]) -> str:
    """The UI's launchPartitionBackfill mutation, over the workspace the webserver would load."""
    from dagster._core.workspace.context import WorkspaceProcessContext
    from dagster._core.workspace.load_target import WorkspaceFileTarget
    from dagster_graphql.test.utils import execute_dagster_graphql

    params = {
        "assetSelection": [{"path": asset_key.path}],
        "partitionNames": partitions,
        "fromFailure": False,
        "tags": [],
    }
    target = WorkspaceFileTarget(paths=[str(WORKSPACE)])
    with WorkspaceProcessContext(instance, target) as process_context:
        request_context = process_context.create_request_context()
        errors = request_context.code_location_errors()
        assert not errors, f"the code location did not load: {errors}"
        result = execute_dagster_graphql(
            request_context, LAUNCH_PARTITION_BACKFILL, {"backfillParams": params}
        )
    assert not result.errors, f"GraphQL errors: {result.errors}"
    launched = result.data["launchPartitionBackfill"]
    assert launched["__typename"] == "LaunchBackfillSuccess", f"backfill refused: {launched}"
    return launched["backfillId"]


def describe_runs(instance, runs) -> str:
    """One line per run, with the error of each failed one."""
    lines = []
    for run in runs:
        tags = {key: value for key, value in run.tags.items() if "partition_range" in key}
        lines.append(f"{run.run_id[:8]} {run.status.value} {tags}")
        if run.status != dg.DagsterRunStatus.SUCCESS:
            failures = instance.all_logs(
                run.run_id,
                of_type={dg.DagsterEventType.STEP_FAILURE, dg.DagsterEventType.RUN_FAILURE},
            )
            for event in failures:
                data = event.dagster_event.event_specific_data if event.dagster_event else None
                error = getattr(data, "error", None)
                detail = error.message.strip() if error is not None else event.message
                lines.append("    " + detail.replace("\n", "\n    "))
    return "\n".join(lines) or "(no runs)"


def wait_for_backfill(instance, backfill_id: str, daemon: Service, timeout_s: float):
    from dagster._core.execution.backfill import BULK_ACTION_TERMINAL_STATUSES

    deadline = time.monotonic() + timeout_s
    while True:
        daemon.check_alive()
        backfill = instance.get_backfill(backfill_id)
        if backfill.status in BULK_ACTION_TERMINAL_STATUSES:
            return backfill
        if time.monotonic() > deadline:
            runs = instance.get_runs(filters=dg.RunsFilter(tags={BACKFILL_TAG: backfill_id}))
            raise AssertionError(
                f"backfill {backfill_id} still {backfill.status.value} after {timeout_s:.0f} s; "
                f"runs:\n{describe_runs(instance, runs)}\ndaemon log tail:\n{daemon.log_tail()}"
            )
        time.sleep(1)


def test_daemon_runs_a_multi_run_backfill_over_every_clip_partition(pg_home, daemon):
    from saliency_assets.core.run.results_store import ResultStore
    from saliency_assets.definitions import build_definitions

    with dg.DagsterInstance.get() as instance:
        assert type(instance.run_storage).__name__ == "PostgresRunStorage"
        defs = build_definitions()
        refresh = defs.resolve_job_def(f"saliency_{TABLE}_refresh").execute_in_process(
            instance=instance
        )
        assert refresh.success
        partitions = instance.get_dynamic_partitions(f"saliency_{TABLE}_clips")
        assert partitions == CLIP_NAMES

        # Submitted before the daemon starts, so its first backfill iteration picks it up.
        submitted = time.monotonic()
        backfill_id = launch_backfill_like_the_ui(instance, CLIP_SALIENCY, partitions)
        daemon.start()
        backfill = wait_for_backfill(instance, backfill_id, daemon, BACKFILL_TIMEOUT_S)
        elapsed = time.monotonic() - submitted

        runs = instance.get_runs(filters=dg.RunsFilter(tags={BACKFILL_TAG: backfill_id}))
        summary = describe_runs(instance, runs)
        assert backfill.status.value == "COMPLETED_SUCCESS", (
            f"backfill ended {backfill.status.value}:\n{summary}\n{daemon.log_tail()}"
        )
        assert len(runs) == EXPECTED_RUNS, summary
        assert all(run.status == dg.DagsterRunStatus.SUCCESS for run in runs), summary
        # Nothing else ran: the refresh run plus the backfill's runs.
        assert len(instance.get_runs()) == EXPECTED_RUNS + 1, summary
        ranges = sorted(
            (
                run.tags["dagster/asset_partition_range_start"],
                run.tags["dagster/asset_partition_range_end"],
            )
            for run in runs
        )
        assert ranges == [
            (CLIP_NAMES[i], CLIP_NAMES[i + CLIPS_PER_RUN - 1])
            for i in range(0, len(CLIP_NAMES), CLIPS_PER_RUN)
        ]

        assert instance.get_materialized_partitions(CLIP_SALIENCY) == set(CLIP_NAMES)
        records = instance.fetch_materializations(CLIP_SALIENCY, limit=100).records
        assert sorted(record.partition_key for record in records) == CLIP_NAMES
        assert {record.run_id for record in records} == {run.run_id for run in runs}
        for record in records:  # each clip partition carries its own clip's result
            metadata = record.asset_materialization.metadata
            assert metadata["status"].value == "ok", (record.partition_key, metadata)
            assert isinstance(metadata["saliency_mean"].value, float)
        checks = instance.event_log_storage.get_asset_check_execution_history(
            dg.AssetCheckKey(CLIP_SALIENCY, "status_contract"), limit=10
        )
        assert len(checks) == EXPECTED_RUNS
        assert all(check.evaluation.passed for check in checks)

        store = Path(instance.storage_directory()) / "saliency" / TABLE / "results"
        assert len(ResultStore(store)) == len(CLIP_NAMES)
        print(f"backfill {backfill_id}: {len(runs)} runs, completed {elapsed:.1f} s after submit")
