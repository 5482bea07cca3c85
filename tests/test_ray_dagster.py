"""A Dagster clip batch computed on the local Ray cluster through the shared ``ray``
resource (RayCluster), and how that resource picks the cluster."""

import json
import math
from dataclasses import replace

import pytest
from dagster_support import (
    check_metadata,
    load_defs,
    range_tags,
    run_job,
    write_corpus,
    write_manifest,
)
from support.postgres import query
from support.s3_server import put

from saliency_assets.core.contract.config import MaterializeConfig
from saliency_assets.core.contract.manifests import load_manifest
from saliency_assets.core.run import ray_runner
from saliency_assets.core.run.engine import materialize_rows, prepare_model
from saliency_assets.core.run.pg_store import RESULTS_TABLE
from saliency_assets.core.tables import filesystems
from saliency_assets.core.tables.table_files import read_table
from saliency_assets.defs import resources
from saliency_assets.defs.resources import RAY_ADDRESS_ENV, RAY_KEY, RayCluster


class CountedTasks:
    """The tasks a runner is offered (their length is an upper bound: clips found stored are
    skipped as they are read), counting those it really takes."""

    def __init__(self, tasks) -> None:
        self.tasks, self.taken = tasks, 0

    def __len__(self) -> int:
        return len(self.tasks)

    def __iter__(self):
        for task in self.tasks:
            self.taken += 1
            yield task


def test_clip_batch_on_the_cluster_with_postgresql_and_an_s3_table_equals_a_local_run(
    ray_cluster, s3_bucket, pg_url, postgres_instance, tmp_path, monkeypatch
):
    """The production shape on one machine: a deployment on the PostgreSQL instance whose
    database also holds the results store, the table and clips in a bucket, and the clip batch
    computed on the cluster the deployment names."""
    table = write_corpus(tmp_path)
    base = f"s3://{s3_bucket}"
    for path in [table, *(tmp_path / "clips").iterdir()]:
        put(f"{base}/{path.relative_to(tmp_path)}", path.read_bytes())
    on_s3 = {"input": f"{base}/features.jsonl", "root": f"{base}/clips"}
    on_s3 |= {"output": f"{base}/out/features.saliency.jsonl", "audit_json": f"{base}/audit.json"}
    manifest = write_manifest(tmp_path, results_store=pg_url, **on_s3)
    ray_batches = spy_on_ray_batches(monkeypatch)
    monkeypatch.setenv(RAY_ADDRESS_ENV, ray_cluster.address)
    monkeypatch.chdir(tmp_path)  # where a URL taken for a folder would appear

    clips = run_all(load_defs(monkeypatch, manifest), postgres_instance)

    assert type(postgres_instance.run_storage).__name__ == "PostgresRunStorage"
    assert [clips for clips in ray_batches if clips] == [3]  # the table found them all stored
    assert len(clips.get_asset_materialization_events()) == 3  # one per clip partition
    batch = check_metadata(clips, "status_contract")
    assert (batch["computed_clips"], batch["status/ok"]) == (3, 3)
    assert query(pg_url, f"SELECT count(*) FROM {RESULTS_TABLE}") == [(3,)]
    rows = read_table(on_s3["output"]).rows
    for row, local_row in zip(rows, local_rows(manifest, tmp_path), strict=True):
        assert row["saliency_status"] == "ok"
        assert math.isclose(row["saliency_mean"], local_row["saliency_mean"], abs_tol=1e-6)
        assert math.isclose(row["saliency_var"], local_row["saliency_var"], abs_tol=1e-6)
    assert filesystems.stat(on_s3["audit_json"]).kind == "file"
    assert not (tmp_path / "s3:").exists() and not (tmp_path / "postgresql:").exists()


def spy_on_ray_batches(monkeypatch) -> list[int]:
    """How many clips each RayRunner call took, as each call ends."""
    ray_batches = []
    original_call = ray_runner.RayRunner.__call__

    def spying_call(self, tasks):
        counted = CountedTasks(tasks)
        yield from original_call(self, counted)
        ray_batches.append(counted.taken)

    monkeypatch.setattr(ray_runner.RayRunner, "__call__", spying_call)
    return ray_batches


def local_rows(manifest, folder):
    """The manifest's table computed here by local worker processes, from the local copy."""
    (table,) = load_manifest(manifest).tables
    config = replace(table.config, root=folder / "clips", ray_address=None)
    return materialize_rows(
        read_table(folder / "features.jsonl").rows, config, prepare_model(config)
    ).rows


def run_all(defs, instance):
    run_job(defs, "saliency_t_refresh", instance)
    clips = run_job(defs, "saliency_t_clips", instance, tags=range_tags("a.mp4", "c.mp4"))
    run_job(defs, "saliency_t_enrich", instance)
    return clips


def test_one_ray_resource_serves_every_table(tmp_path, monkeypatch):
    write_corpus(tmp_path)
    manifest = tmp_path / "manifest.json"
    tables = [
        {"id": name, "input": "features.jsonl", "output": f"out/{name}.jsonl", "root": "clips"}
        for name in ("t", "u")
    ]
    manifest.write_text(json.dumps({"tables": tables}))

    shared = load_defs(monkeypatch, manifest).resources

    assert isinstance(shared[RAY_KEY], RayCluster)
    assert not [key for key in shared if key.startswith("ray_cluster")]


@pytest.mark.parametrize(
    ("resource", "manifest", "environment", "expected"),
    [
        ("run:1", "manifest:2", "env:3", "run:1"),  # the run's resource config wins
        (None, "manifest:2", "env:3", "manifest:2"),  # then each table's manifest
        (None, None, "env:3", "env:3"),  # then the deployment's variable
        (None, None, None, None),  # else local worker processes
    ],
)
def test_the_cluster_is_the_runs_then_the_manifests_then_the_deployments(
    resource, manifest, environment, expected, monkeypatch
):
    # Only the choice is tested here; it must not need the [ray] extra, which CI may lack.
    monkeypatch.setattr(resources, "check_ray_installed", lambda: None)
    if environment is None:
        monkeypatch.delenv(RAY_ADDRESS_ENV, raising=False)
    else:
        monkeypatch.setenv(RAY_ADDRESS_ENV, environment)

    config = RayCluster(address=resource).apply(MaterializeConfig(ray_address=manifest))

    assert config.ray_address == expected
