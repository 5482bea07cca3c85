"""The clip sensor (registration only, cursor-driven) and the automation conditions."""

import os

import dagster as dg
import pytest
from dagster_support import load_defs, range_tags, run_job, write_corpus, write_manifest
from support.clips import make_clip

CLIPS = dg.AssetKey(["saliency", "t", "clip_saliency"])
ENRICHED = dg.AssetKey(["saliency", "t", "enriched_table"])


@pytest.fixture
def instance(dagster_instance):
    return dagster_instance


def tick(defs, instance, cursor=None):
    sensor = defs.resolve_sensor_def("saliency_t_clip_sensor")
    with dg.build_sensor_context(instance=instance, definitions=defs, cursor=cursor) as context:
        return sensor(context)


def added(result):
    return [
        key
        for request in result.dynamic_partitions_requests
        if isinstance(request, dg.AddDynamicPartitionsRequest)
        for key in request.partition_keys
    ]


def deleted(result):
    return [
        key
        for request in result.dynamic_partitions_requests
        if isinstance(request, dg.DeleteDynamicPartitionsRequest)
        for key in request.partition_keys
    ]


def apply(instance, result):
    """What the daemon does with a tick's partition requests (tests must do it themselves)."""
    for request in result.dynamic_partitions_requests:
        if isinstance(request, dg.AddDynamicPartitionsRequest):
            instance.add_dynamic_partitions(request.partitions_def_name, request.partition_keys)
        else:
            for key in request.partition_keys:
                instance.delete_dynamic_partition(request.partitions_def_name, key)


def test_sensor_registers_new_clips_and_requests_only_a_table_refresh(
    tmp_path, instance, monkeypatch
):
    write_corpus(tmp_path)
    defs = load_defs(monkeypatch, write_manifest(tmp_path))
    result = tick(defs, instance)
    assert added(result) == ["a.mp4", "b.mp4", "c.mp4"]
    assert [r.job_name for r in result.run_requests] == ["saliency_t_refresh"]


def test_an_unchanged_table_is_skipped_from_its_cursor(tmp_path, instance, monkeypatch):
    table = write_corpus(tmp_path)
    defs = load_defs(monkeypatch, write_manifest(tmp_path))
    first = tick(defs, instance)
    apply(instance, first)
    again = tick(defs, instance, first.cursor)
    assert again.run_requests == [] and again.dynamic_partitions_requests == []
    stat = table.stat()
    os.utime(table, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # touched, same bytes
    touched = tick(defs, instance, again.cursor)
    assert touched.run_requests == [] and touched.dynamic_partitions_requests == []
    assert touched.cursor != again.cursor


def test_a_removed_clip_is_deleted_and_a_new_one_added(tmp_path, instance, monkeypatch):
    write_corpus(tmp_path)
    defs = load_defs(monkeypatch, write_manifest(tmp_path))
    first = tick(defs, instance)
    apply(instance, first)
    write_corpus(tmp_path, clip_names=("a.mp4", "c.mp4", "d.mp4"))
    second = tick(defs, instance, first.cursor)
    assert (added(second), deleted(second)) == (["d.mp4"], ["b.mp4"])


def test_a_clip_rewritten_in_place_is_requested_once(tmp_path, instance, monkeypatch):
    write_corpus(tmp_path)
    defs = load_defs(monkeypatch, write_manifest(tmp_path))
    first = tick(defs, instance)
    apply(instance, first)
    make_clip(tmp_path / "clips" / "b.mp4", 96, 64, 4)
    second = tick(defs, instance, first.cursor)
    assert [(r.job_name, r.partition_key) for r in second.run_requests] == [
        ("saliency_t_clips", "b.mp4")
    ]
    third = tick(defs, instance, second.cursor)
    # Seen again on the next pass, under the same run key: Dagster launches it only once.
    assert {r.run_key for r in third.run_requests} <= {r.run_key for r in second.run_requests}


def test_a_rewrite_is_requested_even_after_a_run_reindexed_the_clips(
    tmp_path, instance, monkeypatch
):
    # A run for a key its index lacks re-reads the table and rewrites the clip index (with the
    # files' current stats) before it fails naming the key: if that were the sensor's baseline,
    # a rewrite it had not probed yet would never be requested (the daemon test's stall).
    write_corpus(tmp_path)
    defs = load_defs(monkeypatch, write_manifest(tmp_path))
    first = tick(defs, instance)
    apply(instance, first)
    make_clip(tmp_path / "clips" / "b.mp4", 96, 64, 4)
    instance.add_dynamic_partitions("saliency_t_clips", ["d.mp4"])
    unknown = run_job(
        defs, "saliency_t_clips", instance, {"dagster/partition": "d.mp4"}, raise_on_error=False
    )
    assert not unknown.success
    second = tick(defs, instance, first.cursor)
    assert [(r.job_name, r.partition_key) for r in second.run_requests] == [
        ("saliency_t_clips", "b.mp4")
    ]


def test_a_failed_key_is_requested_once_the_table_names_it(tmp_path, instance, monkeypatch):
    write_corpus(tmp_path)
    defs = load_defs(monkeypatch, write_manifest(tmp_path))
    first = tick(defs, instance)
    apply(instance, first)
    instance.add_dynamic_partitions("saliency_t_clips", ["d.mp4"])  # before the table names it
    failed = run_job(
        defs, "saliency_t_clips", instance, {"dagster/partition": "d.mp4"}, raise_on_error=False
    )
    assert not failed.success  # and the automation leaves a failed partition alone
    write_corpus(tmp_path, clip_names=("a.mp4", "b.mp4", "c.mp4", "d.mp4"))
    second = tick(defs, instance, first.cursor)
    assert [(r.job_name, r.partition_key) for r in second.run_requests] == [
        ("saliency_t_refresh", None),
        ("saliency_t_clips", "d.mp4"),
    ]
    assert tick(defs, instance, second.cursor).run_requests == []


def test_sensor_skips_when_the_table_is_absent(tmp_path, instance, monkeypatch):
    defs = load_defs(monkeypatch, write_manifest(tmp_path))
    assert isinstance(tick(defs, instance), dg.SkipReason)


def evaluate(defs, instance, cursor=None):
    return dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=cursor)


def test_automation_requests_every_missing_clip_then_the_table_once(
    tmp_path, instance, monkeypatch
):
    write_corpus(tmp_path)
    defs = load_defs(monkeypatch, write_manifest(tmp_path))
    run_job(defs, "saliency_t_refresh", instance)
    first = evaluate(defs, instance)
    assert first.get_requested_partitions(CLIPS) == {"a.mp4", "b.mp4", "c.mp4"}
    assert first.get_requested_partitions(ENRICHED) == set()
    run_job(defs, "saliency_t_clips", instance, tags=range_tags("a.mp4", "b.mp4"))
    second = evaluate(defs, instance, first.cursor)
    # Still missing, never forgotten; the table waits for it.
    assert second.get_requested_partitions(CLIPS) == {"c.mp4"}
    assert second.get_requested_partitions(ENRICHED) == set()
    run_job(defs, "saliency_t_clips", instance, tags=range_tags("c.mp4", "c.mp4"))
    third = evaluate(defs, instance, second.cursor)
    assert third.get_requested_partitions(CLIPS) == set()
    assert third.get_requested_partitions(ENRICHED) == {None}
    run_job(defs, "saliency_t_enrich", instance)  # what the requested run does
    fourth = evaluate(defs, instance, third.cursor)
    assert fourth.total_requested == 0


def test_a_clip_landing_while_the_table_is_refreshed_is_refreshed_again(
    tmp_path, instance, monkeypatch
):
    # The refresh run may read its inputs before a clip lands and finish after it: the clip's
    # update must outlive that run (reset when the table is requested, not when it is written).
    write_corpus(tmp_path)
    defs = load_defs(monkeypatch, write_manifest(tmp_path))
    run_job(defs, "saliency_t_refresh", instance)
    run_job(defs, "saliency_t_clips", instance, tags=range_tags("a.mp4", "c.mp4"))
    requested = evaluate(defs, instance)
    assert requested.get_requested_partitions(ENRICHED) == {None}
    run_job(defs, "saliency_t_clips", instance, tags={"dagster/partition": "b.mp4"})
    run_job(defs, "saliency_t_enrich", instance)  # the requested refresh ends after b landed
    again = evaluate(defs, instance, requested.cursor)
    assert again.get_requested_partitions(ENRICHED) == {None}
    run_job(defs, "saliency_t_enrich", instance)
    assert evaluate(defs, instance, again.cursor).total_requested == 0


def test_a_clip_whose_run_failed_does_not_hold_back_the_table(tmp_path, instance, monkeypatch):
    write_corpus(tmp_path)
    defs = load_defs(monkeypatch, write_manifest(tmp_path))
    run_job(defs, "saliency_t_refresh", instance)
    run_job(defs, "saliency_t_clips", instance, tags=range_tags("a.mp4", "b.mp4"))
    (tmp_path / "features.jsonl").unlink()  # the run for c.mp4 fails: its table is gone
    failed = run_job(
        defs,
        "saliency_t_clips",
        instance,
        tags={"dagster/partition": "c.mp4"},
        raise_on_error=False,
    )
    assert not failed.success
    result = evaluate(defs, instance)
    assert result.get_requested_partitions(CLIPS) == set()
    assert result.get_requested_partitions(ENRICHED) == {None}


def test_refresh_cron_becomes_a_schedule_of_the_refresh_job(tmp_path, monkeypatch):
    defs = load_defs(
        monkeypatch, write_manifest(tmp_path, dagster_options={"refresh_cron": "0 3 * * *"})
    )
    schedule = defs.resolve_schedule_def("saliency_t_refresh_schedule")
    assert schedule.cron_schedule == "0 3 * * *"
    assert schedule.job_name == "saliency_t_refresh"
    assert schedule.description
