"""Persisted clip results: reused under one key; a changed source, model or setting recomputes."""

import io
import os
import time

import pyarrow.parquet as pq
from test_engine import OK_RESULT, CountingRunner

from saliency_assets.core.contract.config import MaterializeConfig
from saliency_assets.core.model.clip_saliency import ClipResult
from saliency_assets.core.model.saliency_model import ModelChoice, choose_model
from saliency_assets.core.run.engine import materialize_rows
from saliency_assets.core.run.results_store import ResultKey, ResultStore


def run(rows, config, model, store):
    runner = CountingRunner(OK_RESULT)
    outcome = materialize_rows(rows, config, model, runner=runner, store=store, log=io.StringIO())
    return outcome, runner


def test_second_run_reuses_stored_results(tmp_path):
    clip = tmp_path / "clip.mp4"
    clip.write_bytes(b"x" * 100)
    store_dir = tmp_path / "store"
    model = choose_model(None, None)
    rows = [{"src": str(clip)}]
    _, first = run(rows, MaterializeConfig(), model, ResultStore(store_dir))
    outcome, second = run(rows, MaterializeConfig(), model, ResultStore(store_dir))
    assert len(first.tasks) == 1 and second.tasks == []
    assert outcome.reused_clips == 1
    assert outcome.rows[0]["saliency_mean"] == OK_RESULT.saliency_mean


def test_changed_source_model_or_settings_recompute(tmp_path):
    clip = tmp_path / "clip.mp4"
    clip.write_bytes(b"x" * 100)
    store_dir = tmp_path / "store"
    model = choose_model(None, None)
    rows = [{"src": str(clip)}]
    run(rows, MaterializeConfig(), model, ResultStore(store_dir))
    _, changed_settings = run(rows, MaterializeConfig(max_frames=4), model, ResultStore(store_dir))
    other_model = ModelChoice(model.path, model.model_id, "0" * 64)
    _, changed_model = run(rows, MaterializeConfig(), other_model, ResultStore(store_dir))
    clip.write_bytes(b"y" * 100)
    os.utime(clip, ns=(1, 1))
    _, changed_source = run(rows, MaterializeConfig(), model, ResultStore(store_dir))
    assert [len(r.tasks) for r in (changed_settings, changed_model, changed_source)] == [1, 1, 1]


def test_transient_failures_are_not_stored(tmp_path):
    store = ResultStore(tmp_path / "store")
    key = ResultKey(".mp4", "f", "m", "s")
    store.save([(key, ClipResult("decode-failed", detail="decode timed out after 5 s"))])
    assert ResultStore(tmp_path / "store").lookup(key) is None


def test_many_parts_are_compacted_without_losing_results(tmp_path):
    store_dir = tmp_path / "store"
    store = ResultStore(store_dir)
    for index in range(70):
        store.save([(ResultKey(".mp4", f"f{index}", "m", "s"), OK_RESULT)])
    reloaded = ResultStore(store_dir)
    assert len(reloaded) == 70
    assert len(os.listdir(store_dir)) == 1
    assert reloaded.lookup(ResultKey(".mp4", "f69", "m", "s")) == OK_RESULT


class SlowLastRunner:
    """Yields every clip but the last at once, then waits (up to a minute) until the store
    holds them before yielding the last: a slow clip after quick ones."""

    def __init__(self, store_dir):
        self.store_dir = store_dir
        self.stored_while_waiting = 0

    def __call__(self, tasks):
        tasks = list(tasks)
        for key, _source in tasks[:-1]:
            yield key, OK_RESULT
        deadline = time.monotonic() + 60
        while self.stored_while_waiting < len(tasks) - 1 and time.monotonic() < deadline:
            time.sleep(0.05)
            self.stored_while_waiting = len(ResultStore(self.store_dir, log=None))
        yield tasks[-1][0], OK_RESULT


def test_finished_results_are_stored_while_the_next_clip_runs(tmp_path):
    rows = []
    for index in range(4):
        clip = tmp_path / f"clip{index}.mp4"
        clip.write_bytes(bytes([index]) * 100)
        rows.append({"src": str(clip)})
    runner = SlowLastRunner(tmp_path / "store")
    materialize_rows(
        rows, MaterializeConfig(), choose_model(None, None), runner=runner,
        store=ResultStore(tmp_path / "store"), log=io.StringIO(),
    )  # fmt: skip
    assert runner.stored_while_waiting == 3
    assert len(ResultStore(tmp_path / "store")) == 4


def test_parts_of_the_old_fingerprint_are_ignored_not_reported(tmp_path):
    store_dir = tmp_path / "store"
    ResultStore(store_dir).save([(ResultKey(".mp4", "f", "m", "s"), OK_RESULT)])
    (part,) = store_dir.glob("part-*.parquet")
    old = pq.read_table(part).drop_columns(["clip_format"])
    pq.write_table(old, part)
    log = io.StringIO()
    assert len(ResultStore(store_dir, log=log)) == 0
    assert log.getvalue() == ""
