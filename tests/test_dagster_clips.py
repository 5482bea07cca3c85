"""Dagster sees every clip: keys, per-clip materializations and data versions, real runs."""

from pathlib import Path

import dagster as dg
import pytest
from dagster._core.definitions.data_version import StaleStatus
from dagster._utils.test.data_versions import get_stale_status_resolver
from dagster_support import (
    load_defs,
    partition_metadata,
    range_tags,
    run_job,
    write_corpus,
    write_manifest,
)
from hypothesis import given
from hypothesis import strategies as st
from support.clips import make_clip

from saliency_assets.core.decode.clips import ClipSource
from saliency_assets.core.run.results_store import ResultStore
from saliency_assets.defs.partitions import clip_partition_key, escape_key_part, unescape_key_part

CLIPS = "saliency/t/clip_saliency"


@pytest.fixture
def instance(dagster_instance):
    return dagster_instance


def versions(instance, partitions) -> dict[str, str]:
    key = dg.AssetKey(["saliency", "t", "clip_saliency"])
    found = {}
    for partition in partitions:
        records_filter = dg.AssetRecordsFilter(asset_key=key, asset_partitions=[partition])
        record = instance.fetch_materializations(records_filter, limit=1).records[0]
        found[partition] = record.asset_materialization.tags["dagster/data_version"]
    return found


def compute(defs, instance, first="a.mp4", last="c.mp4"):
    run_job(defs, "saliency_t_refresh", instance)
    return run_job(defs, "saliency_t_clips", instance, tags=range_tags(first, last))


@given(st.text())
def test_key_escape_is_reversible_and_dagster_safe(text):
    key = escape_key_part(text)
    assert unescape_key_part(key) == text
    assert "..." not in key and "@" not in key
    assert not any(ord(char) < 32 or ord(char) == 127 for char in key)


def test_clips_that_differ_only_in_forbidden_characters_get_distinct_keys(tmp_path):
    names = ["x\ny.mp4", "x_y.mp4", "a...b.mp4", "a_._b.mp4", "x.yuv@64x48_yuv420p"]
    keys = [clip_partition_key(ClipSource(tmp_path / name), tmp_path) for name in names]
    assert len(set(keys)) == len(names)
    raw = ClipSource(tmp_path / "x.yuv", 64, 48, "yuv420p")
    assert clip_partition_key(raw, tmp_path) not in keys
    outside = clip_partition_key(ClipSource(tmp_path.parent / "z.mp4"), tmp_path)
    assert outside.startswith("/") and outside != "z.mp4"


def test_each_clip_partition_carries_its_own_status_and_value(tmp_path, instance, monkeypatch):
    write_corpus(tmp_path)
    (tmp_path / "clips" / "b.mp4").write_bytes(b"not a video")
    defs = load_defs(monkeypatch, write_manifest(tmp_path, dagster_options={"clips_per_run": 3}))
    result = compute(defs, instance)
    clips = partition_metadata(result, CLIPS)
    assert sorted(clips) == ["a.mp4", "b.mp4", "c.mp4"]
    assert clips["a.mp4"]["status"] == "ok" and clips["c.mp4"]["status"] == "ok"
    assert isinstance(clips["a.mp4"]["saliency_mean"], float)
    assert clips["a.mp4"]["saliency_mean"] != clips["c.mp4"]["saliency_mean"]
    assert clips["b.mp4"]["status"] == "decode-failed"
    assert "saliency_mean" not in clips["b.mp4"] and clips["b.mp4"]["error"]
    assert clips["a.mp4"]["frames_used"] == 2
    assert clips["a.mp4"]["source_fingerprint"] != clips["c.mp4"]["source_fingerprint"]
    assert {m["model_sha256"] for m in clips.values()} == {clips["a.mp4"]["model_sha256"]}


def test_noop_rerun_keeps_versions_and_a_changed_clip_changes_only_its_own(
    tmp_path, instance, monkeypatch
):
    write_corpus(tmp_path)
    defs = load_defs(monkeypatch, write_manifest(tmp_path, dagster_options={"clips_per_run": 3}))
    compute(defs, instance)
    run_job(defs, "saliency_t_enrich", instance)
    first = versions(instance, ["a.mp4", "b.mp4", "c.mp4"])
    assert len(set(first.values())) == 3
    compute(defs, instance)
    run_job(defs, "saliency_t_enrich", instance)
    assert versions(instance, first) == first
    resolver = get_stale_status_resolver(instance, list(defs.assets))
    for asset in defs.assets:
        for partition in [None] if not asset.partitions_def else list(first):
            assert resolver.get_status(asset.key, partition) == StaleStatus.FRESH
    make_clip(tmp_path / "clips" / "b.mp4", 96, 64, 4)
    compute(defs, instance)
    changed = versions(instance, first)
    assert [p for p in first if changed[p] != first[p]] == ["b.mp4"]


def test_a_changed_setting_changes_every_version(tmp_path, instance, monkeypatch):
    write_corpus(tmp_path)
    defs = load_defs(monkeypatch, write_manifest(tmp_path, dagster_options={"clips_per_run": 3}))
    compute(defs, instance)
    first = versions(instance, ["a.mp4", "b.mp4", "c.mp4"])
    options = {"clips_per_run": 3}
    defs = load_defs(
        monkeypatch, write_manifest(tmp_path, dagster_options=options, temporal_aggregator="max")
    )
    compute(defs, instance)
    changed = versions(instance, first)
    assert all(changed[p] != first[p] for p in first)


def test_a_key_that_names_no_clip_fails_naming_it(tmp_path, instance, monkeypatch):
    write_corpus(tmp_path)
    defs = load_defs(monkeypatch, write_manifest(tmp_path))
    run_job(defs, "saliency_t_refresh", instance)
    instance.add_dynamic_partitions("saliency_t_clips", ["typo.mp4"])  # the UI's "Add partition"
    result = run_job(
        defs,
        "saliency_t_clips",
        instance,
        tags={"dagster/partition": "typo.mp4"},
        raise_on_error=False,
    )
    assert not result.success
    failure = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"][0]
    assert "'typo.mp4' names no clip of table 't'" in failure.event_specific_data.error.message
    assert partition_metadata(result, CLIPS) == {}


def test_a_clip_removed_from_the_table_loses_its_partition_not_its_result(
    tmp_path, instance, monkeypatch
):
    write_corpus(tmp_path)
    defs = load_defs(monkeypatch, write_manifest(tmp_path, dagster_options={"clips_per_run": 3}))
    compute(defs, instance)
    write_corpus(tmp_path, clip_names=("a.mp4", "c.mp4"))
    refresh = run_job(defs, "saliency_t_refresh", instance)
    assert instance.get_dynamic_partitions("saliency_t_clips") == ["a.mp4", "c.mp4"]
    source = [e for e in refresh.get_asset_materialization_events()][0]
    assert source.materialization.metadata["removed_partitions"].value == 1
    stored = ResultStore(Path(instance.storage_directory()) / "saliency" / "t" / "results")
    assert len(stored) == 3


PARTITION_QUERY = """
query ClipPartition($path: [String!]!, $partition: String!) {
  assetOrError(assetKey: {path: $path}) {
    ... on Asset {
      assetMaterializations(partitions: [$partition]) {
        partition
        metadataEntries {
          label
          ... on FloatMetadataEntry { floatValue }
          ... on TextMetadataEntry { text }
        }
      }
    }
  }
}
"""


def test_the_uis_partition_query_returns_that_clips_own_value(tmp_path, instance, monkeypatch):
    """What the UI's partition page asks the webserver for, over the workspace it loads."""
    from dagster._core.workspace.context import WorkspaceProcessContext
    from dagster._core.workspace.load_target import WorkspaceFileTarget
    from dagster_graphql.test.utils import execute_dagster_graphql

    write_corpus(tmp_path)
    manifest = write_manifest(tmp_path, dagster_options={"clips_per_run": 3})
    defs = load_defs(monkeypatch, manifest)
    computed = partition_metadata(compute(defs, instance), CLIPS)
    workspace = WorkspaceFileTarget(paths=[str(Path(__file__).parents[1] / "workspace.yaml")])
    with WorkspaceProcessContext(instance, workspace) as process_context:
        context = process_context.create_request_context()
        for partition in ("a.mp4", "c.mp4"):
            variables = {"path": ["saliency", "t", "clip_saliency"], "partition": partition}
            result = execute_dagster_graphql(context, PARTITION_QUERY, variables)
            assert not result.errors, result.errors
            (event,) = result.data["assetOrError"]["assetMaterializations"]
            entries = {entry["label"]: entry for entry in event["metadataEntries"]}
            assert event["partition"] == partition
            assert entries["status"]["text"] == "ok"
            assert entries["saliency_mean"]["floatValue"] == computed[partition]["saliency_mean"]
