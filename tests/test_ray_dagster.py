"""A Dagster clip batch computed on the local Ray cluster through the shared ``ray``
resource (RayCluster), and how that resource picks the cluster."""

import json
import math

import pytest
from dagster_support import (
    check_metadata,
    load_defs,
    range_tags,
    run_job,
    write_corpus,
    write_manifest,
)

from saliency_assets.core.contract.config import MaterializeConfig
from saliency_assets.core.run import ray_runner
from saliency_assets.defs import resources
from saliency_assets.defs.resources import RAY_ADDRESS_ENV, RAY_KEY, RayCluster


def read_rows(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


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


def test_clip_batch_is_computed_on_the_cluster_the_deployment_names(
    ray_cluster, tmp_path, dagster_instance, monkeypatch
):
    local, on_ray = tmp_path / "local", tmp_path / "ray"
    for folder in (local, on_ray):
        write_corpus(folder)
        write_manifest(folder, dagster_options={"storage": "store"})  # a results store each
    ray_batches = []
    original_call = ray_runner.RayRunner.__call__

    def spying_call(self, tasks):
        counted = CountedTasks(tasks)
        yield from original_call(self, counted)
        ray_batches.append(counted.taken)

    monkeypatch.setattr(ray_runner.RayRunner, "__call__", spying_call)

    run_all(load_defs(monkeypatch, local / "manifest.json"), dagster_instance)
    monkeypatch.setenv(RAY_ADDRESS_ENV, ray_cluster.address)
    clips = run_all(load_defs(monkeypatch, on_ray / "manifest.json"), dagster_instance)

    assert [clips for clips in ray_batches if clips] == [3]  # the table found them all stored
    assert len(clips.get_asset_materialization_events()) == 3  # one per clip partition
    batch = check_metadata(clips, "status_contract")
    assert (batch["computed_clips"], batch["status/ok"]) == (3, 3)
    expected = read_rows(local / "out/features.saliency.jsonl")
    for row, local_row in zip(
        read_rows(on_ray / "out/features.saliency.jsonl"), expected, strict=True
    ):
        assert row["saliency_status"] == "ok"
        assert math.isclose(row["saliency_mean"], local_row["saliency_mean"], abs_tol=1e-6)


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
