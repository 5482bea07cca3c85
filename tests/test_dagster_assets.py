"""The Dagster layer on a temporary instance, with real decoding and the real bundled model."""

import base64
import json
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import pytest
from dagster_support import (
    check_evaluation,
    check_metadata,
    load_defs,
    materialization_metadata,
    range_tags,
    run_job,
    write_corpus,
    write_manifest,
)
from support.clips import make_clip


@pytest.fixture
def corpus(tmp_path):
    write_corpus(tmp_path)
    return tmp_path


@pytest.fixture
def instance(dagster_instance):
    return dagster_instance


def compute_clips(defs, instance, first="a.mp4", last="c.mp4"):
    """The source table, then the clips from ``first`` to ``last``; returns the clips' run."""
    run_job(defs, "saliency_t_refresh", instance)
    return run_job(defs, "saliency_t_clips", instance, tags=range_tags(first, last))


def materialize_all(defs, instance, first="a.mp4", last="c.mp4"):
    clips = compute_clips(defs, instance, first, last)
    enriched = run_job(defs, "saliency_t_enrich", instance)
    return clips, enriched


@dataclass
class Materialized:
    corpus: Path
    instance: dg.DagsterInstance
    defs: dg.Definitions
    refresh: dg.ExecuteInProcessResult
    clips: dg.ExecuteInProcessResult
    enriched: dg.ExecuteInProcessResult


@pytest.fixture(scope="module")
def materialized(tmp_path_factory):
    """The corpus materialized once (source table, every clip, enriched table), for the tests
    that read what a full materialization made; tests that change anything make their own."""
    corpus = tmp_path_factory.mktemp("materialized")
    write_corpus(corpus)
    (corpus / "dagster_home").mkdir()
    with dg.instance_for_test(temp_dir=str(corpus / "dagster_home")) as instance:
        with pytest.MonkeyPatch.context() as patch:
            defs = load_defs(patch, write_manifest(corpus))
        refresh = run_job(defs, "saliency_t_refresh", instance)
        clips = run_job(defs, "saliency_t_clips", instance, tags=range_tags("a.mp4", "c.mp4"))
        enriched = run_job(defs, "saliency_t_enrich", instance)
        yield Materialized(corpus, instance, defs, refresh, clips, enriched)


def test_source_table_registers_one_partition_per_unique_clip(materialized):
    instance = materialized.instance
    assert instance.get_dynamic_partitions("saliency_t_clips") == ["a.mp4", "b.mp4", "c.mp4"]
    metadata = materialization_metadata(materialized.refresh, "saliency/t/source_table")
    assert (metadata["rows"], metadata["unique_clips"], metadata["new_partitions"]) == (6, 3, 3)
    assert len(metadata["sha256"]) == 64


def test_full_materialization_writes_the_table_like_the_cli(materialized):
    corpus, clips, enriched = materialized.corpus, materialized.clips, materialized.enriched
    assert len(clips.get_asset_materialization_events()) == 3
    batch = check_metadata(clips, "status_contract")
    assert (batch["clips"], batch["computed_clips"], batch["status/ok"]) == (3, 3, 3)
    rows = [
        json.loads(line)
        for line in (corpus / "out/features.saliency.jsonl").read_text().splitlines()
    ]
    assert [row["saliency_status"] for row in rows] == ["ok"] * 6
    assert rows[0]["saliency_mean"] == rows[1]["saliency_mean"]
    audit = json.loads((corpus / "out/audit.json").read_text())
    assert audit["summary"] == {"total": 6, "ok": 6, "skipped_existing": 0, "failed": 0}
    assert audit["run_provenance"]["schema"] == "ai-run-provenance-v1"
    evaluations = {e.check_name: e.passed for e in enriched.get_asset_check_evaluations()}
    assert evaluations == {
        "status_contract": True,
        "provenance": True,
        "coverage": True,
        "signal": True,
    }
    table_metadata = materialization_metadata(enriched, "saliency/t/enriched_table")
    histogram = table_metadata["saliency_mean_histogram"]
    svg = base64.b64decode(histogram.split("data:image/svg+xml;base64,")[1].split(")")[0])
    assert b">saliency_mean</text>" in svg and b">rows</text>" in svg
    assert table_metadata["saliency_map_thumbnails"].count("data:image/png;base64,") == 3
    assert "saliency_mean = " in table_metadata["saliency_map_thumbnails"]
    for name in ("saliency_mean_median", "saliency_mean_p10", "saliency_mean_p90", "failed_share"):
        assert isinstance(table_metadata[name], float), name
    columns = [column.name for column in table_metadata["dagster/column_schema"].columns]
    assert columns[:2] == ["src", "frame"] and "saliency_mean" in columns


def test_thumbnails_are_made_once_per_clip_result(materialized):
    defs, instance = materialized.defs, materialized.instance
    cache = Path(instance.storage_directory()) / "saliency" / "t" / "thumbnails"
    made = {path.name: path.stat().st_mtime_ns for path in cache.iterdir()}
    assert len(made) == 3
    again = run_job(defs, "saliency_t_enrich", instance)
    assert {path.name: path.stat().st_mtime_ns for path in cache.iterdir()} == made
    thumbnails = materialization_metadata(again, "saliency/t/enriched_table")
    assert thumbnails["saliency_map_thumbnails"].count("data:image/png;base64,") == 3


def test_rerun_skips_computed_clips_and_recomputes_a_changed_one(corpus, instance, monkeypatch):
    defs = load_defs(monkeypatch, write_manifest(corpus))
    compute_clips(defs, instance)
    again = run_job(defs, "saliency_t_clips", instance, tags=range_tags("a.mp4", "c.mp4"))
    assert check_metadata(again, "status_contract")["computed_clips"] == 0
    make_clip(corpus / "clips" / "b.mp4", 96, 64, 4)
    changed = run_job(defs, "saliency_t_clips", instance, tags=range_tags("a.mp4", "c.mp4"))
    metadata = check_metadata(changed, "status_contract")
    assert (metadata["computed_clips"], metadata["reused_clips"]) == (1, 2)


def test_changed_model_setting_recomputes(corpus, instance, monkeypatch):
    defs = load_defs(monkeypatch, write_manifest(corpus))
    compute_clips(defs, instance)
    defs = load_defs(monkeypatch, write_manifest(corpus, temporal_aggregator="max"))
    rerun = run_job(defs, "saliency_t_clips", instance, tags=range_tags("a.mp4", "c.mp4"))
    assert check_metadata(rerun, "status_contract")["computed_clips"] == 3


def test_status_contract_blocks_when_rows_fail(tmp_path, instance, monkeypatch):
    write_corpus(tmp_path, missing=["gone.mp4"])
    defs = load_defs(monkeypatch, write_manifest(tmp_path))
    run_job(defs, "saliency_t_refresh", instance)
    run_job(defs, "saliency_t_clips", instance, tags=range_tags("a.mp4", "c.mp4"))
    enriched = run_job(defs, "saliency_t_enrich", instance, raise_on_error=False)
    assert not enriched.success
    contract = [
        e for e in enriched.get_asset_check_evaluations() if e.check_name == "status_contract"
    ]
    assert contract[0].passed is False
    assert contract[0].metadata["status/missing-source"].value == 1


def test_allowed_row_failures_warn_naming_the_failed_clips(tmp_path, instance, monkeypatch):
    write_corpus(tmp_path, missing=["gone.mp4"])
    defs = load_defs(
        monkeypatch, write_manifest(tmp_path, dagster_options={"allow_row_failures": True})
    )
    _, enriched = materialize_all(defs, instance)
    assert enriched.success
    contract = check_evaluation(enriched, "status_contract")
    assert contract.passed is False
    assert contract.severity == dg.AssetCheckSeverity.WARN
    assert list(contract.metadata["failed_clip_reasons"].value) == ["gone.mp4"]
    assert "gone.mp4" in contract.description


def test_a_broken_clip_fails_the_batch_check_by_name_and_blocks_the_table(
    tmp_path, instance, monkeypatch
):
    write_corpus(tmp_path)
    (tmp_path / "clips" / "b.mp4").write_bytes(b"not a video")
    defs = load_defs(monkeypatch, write_manifest(tmp_path))
    run_job(defs, "saliency_t_refresh", instance)
    clips = run_job(defs, "saliency_t_clips", instance, tags=range_tags("a.mp4", "c.mp4"))
    contract = clips.get_asset_check_evaluations()[0]
    assert contract.passed is False
    assert contract.severity == dg.AssetCheckSeverity.ERROR
    assert contract.metadata["status/decode-failed"].value == 1
    assert list(contract.metadata["failed_clip_reasons"].value) == ["b.mp4"]
    enriched = run_job(defs, "saliency_t_enrich", instance, raise_on_error=False)
    assert not enriched.success


def test_coverage_fails_when_clips_were_not_materialized(corpus, instance, monkeypatch):
    defs = load_defs(monkeypatch, write_manifest(corpus))
    run_job(defs, "saliency_t_refresh", instance)
    run_job(defs, "saliency_t_clips", instance, tags=range_tags("a.mp4", "a.mp4"))
    enriched = run_job(defs, "saliency_t_enrich", instance)
    coverage = check_evaluation(enriched, "coverage")
    assert coverage.passed is False
    assert coverage.metadata["missing_clips"].value == 2


def test_missing_corpus_loads_but_fails_clearly_when_run(tmp_path, instance, monkeypatch):
    defs = load_defs(monkeypatch, write_manifest(tmp_path))
    result = run_job(defs, "saliency_t_refresh", instance, raise_on_error=False)
    assert not result.success
    failure = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"][0]
    assert "does not exist on this machine" in failure.event_specific_data.error.message
    for node in defs.resolve_asset_graph().asset_nodes:  # shown as unavailable, not as empty
        assert node.tags["availability"] == "unavailable"
        assert node.description.startswith("**Unavailable on this machine**")


def test_sharded_partitioning_computes_all_clips(corpus, instance, monkeypatch):
    options = {"partitioning": "shards", "shards": 4, "clips_per_run": 4}
    defs = load_defs(monkeypatch, write_manifest(corpus, dagster_options=options))
    run_job(defs, "saliency_t_refresh", instance)
    clips = run_job(defs, "saliency_t_clips", instance, tags=range_tags("shard-0", "shard-3"))
    assert len(clips.get_asset_materialization_events()) == 4
    assert check_metadata(clips, "status_contract")["clips"] == 3
    assert run_job(defs, "saliency_t_enrich", instance).success


def test_a_sharded_run_before_any_source_table_run_indexes_the_table(corpus, instance, monkeypatch):
    options = {"partitioning": "shards", "shards": 4, "clips_per_run": 4}
    defs = load_defs(monkeypatch, write_manifest(corpus, dagster_options=options))
    clips = run_job(defs, "saliency_t_clips", instance, tags=range_tags("shard-0", "shard-3"))
    assert check_metadata(clips, "status_contract")["clips"] == 3
