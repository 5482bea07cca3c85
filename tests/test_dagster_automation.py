"""The clip sensor and the run planning behind it; the refresh schedule."""

import dagster as dg
import pytest
from dagster_support import load_defs, range_tags, run_job, write_corpus, write_manifest

from saliency_assets.defs.automation import RANGE_END_TAG, RANGE_START_TAG, plan_clip_runs


@pytest.fixture
def instance(dagster_instance):
    return dagster_instance


def evaluate(defs, instance):
    sensor = defs.resolve_sensor_def("saliency_t_clip_sensor")
    with dg.build_sensor_context(instance=instance, definitions=defs) as context:
        return sensor(context)


def ranges(result):
    return [
        (r.tags[RANGE_START_TAG], r.tags[RANGE_END_TAG])
        for r in result.run_requests
        if RANGE_START_TAG in r.tags
    ]


def test_plan_makes_contiguous_chunks_that_skip_done_keys():
    ordered = ["a", "b", "c", "d", "e", "f", "g"]
    requests = plan_clip_runs(ordered, {"a", "b", "c", "e", "f", "g"}, 2, "fp", "job")
    spans = [(r.tags[RANGE_START_TAG], r.tags[RANGE_END_TAG]) for r in requests]
    assert spans == [("a", "b"), ("c", "c"), ("e", "f"), ("g", "g")]
    assert {r.job_name for r in requests} == {"job"}
    assert len({r.run_key for r in requests}) == 4


def test_plan_without_a_size_limit_makes_one_run_per_contiguous_span():
    spans = plan_clip_runs(["a", "b", "c"], {"a", "b", "c"}, 0, "fp")
    assert [(r.tags[RANGE_START_TAG], r.tags[RANGE_END_TAG]) for r in spans] == [("a", "c")]


def test_sensor_registers_new_clips_and_requests_ranged_runs(tmp_path, instance, monkeypatch):
    write_corpus(tmp_path, clip_names=("a.mp4", "b.mp4", "c.mp4"))
    defs = load_defs(monkeypatch, write_manifest(tmp_path))
    result = evaluate(defs, instance)
    added = [
        key for request in result.dynamic_partitions_requests for key in request.partition_keys
    ]
    assert added == ["a.mp4", "b.mp4", "c.mp4"]
    assert ranges(result) == [("a.mp4", "b.mp4"), ("c.mp4", "c.mp4")]
    assert {r.job_name for r in result.run_requests} == {"saliency_t_clips"}


def test_sensor_requests_only_clips_not_yet_computed(tmp_path, instance, monkeypatch):
    write_corpus(tmp_path, clip_names=("a.mp4", "b.mp4"))
    defs = load_defs(monkeypatch, write_manifest(tmp_path))
    run_job(defs, "saliency_t_refresh", instance)
    run_job(defs, "saliency_t_clips", instance, tags=range_tags("a.mp4", "b.mp4"))
    write_corpus(tmp_path, clip_names=("a.mp4", "b.mp4", "d.mp4"))
    result = evaluate(defs, instance)
    assert [k for r in result.dynamic_partitions_requests for k in r.partition_keys] == ["d.mp4"]
    assert ranges(result) == [("d.mp4", "d.mp4")]


def test_sensor_requests_the_enriched_table_once_all_clips_are_done(
    tmp_path, instance, monkeypatch
):
    write_corpus(tmp_path, clip_names=("a.mp4", "b.mp4"))
    defs = load_defs(monkeypatch, write_manifest(tmp_path))
    run_job(defs, "saliency_t_refresh", instance)
    run_job(defs, "saliency_t_clips", instance, tags=range_tags("a.mp4", "b.mp4"))
    result = evaluate(defs, instance)
    assert [r.job_name for r in result.run_requests] == ["saliency_t_enrich"]
    run_job(defs, "saliency_t_enrich", instance)
    assert evaluate(defs, instance).run_requests == []


def test_sensor_skips_when_the_table_is_absent(tmp_path, instance, monkeypatch):
    defs = load_defs(monkeypatch, write_manifest(tmp_path))
    assert isinstance(evaluate(defs, instance), dg.SkipReason)


def test_refresh_cron_becomes_a_schedule_of_the_refresh_job(tmp_path, monkeypatch):
    defs = load_defs(
        monkeypatch, write_manifest(tmp_path, dagster_options={"refresh_cron": "0 3 * * *"})
    )
    schedule = defs.resolve_schedule_def("saliency_t_refresh_schedule")
    assert schedule.cron_schedule == "0 3 * * *"
    assert schedule.job_name == "saliency_t_refresh"
