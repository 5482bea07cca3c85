"""The row contract through the engine, with a counting runner at the clip seam.

End-to-end tests with real decoding and models are in test_cli_*.py; these pin how rows map
to unique clips and how results are written back.
"""

import io
import math

import pytest

from saliency_assets.core.contract.config import MaterializeConfig
from saliency_assets.core.model.clip_saliency import ClipResult
from saliency_assets.core.model.saliency_model import choose_model
from saliency_assets.core.run.engine import materialize_rows


class CountingRunner:
    def __init__(self, result):
        self.result = result
        self.tasks = []

    def __call__(self, tasks):
        self.tasks.extend(tasks)
        for key, _source in tasks:
            yield key, self.result


OK_RESULT = ClipResult("ok", 0.5, 0.125)


@pytest.fixture
def model():
    return choose_model(None, None)


@pytest.fixture
def clip(tmp_path):
    path = tmp_path / "clip.mp4"
    path.write_bytes(b"not inspected by the fake runner")
    return path


def run(rows, config, model, result=OK_RESULT):
    runner = CountingRunner(result)
    log = io.StringIO()
    outcome = materialize_rows(rows, config, model, runner=runner, log=log)
    return outcome, runner, log.getvalue()


def test_ok_row_gets_values_status_and_metadata(clip, model):
    outcome, _, _ = run(
        [{"src": str(clip)}], MaterializeConfig(temporal_aggregator="max", ema_alpha=0.75), model
    )
    row = outcome.rows[0]
    assert (row["saliency_mean"], row["saliency_var"], row["saliency_status"]) == (0.5, 0.125, "ok")
    assert row["saliency_model_id"] == model.model_id
    assert row["saliency_aggregator"] == "max"
    assert row["saliency_ema_alpha"] == 0.75
    assert row["saliency_sampling"] == "head"
    assert row["saliency_inference_size"] == "native"
    assert outcome.summary.to_json() == {"total": 1, "ok": 1, "skipped_existing": 0, "failed": 0}


def test_rows_sharing_a_clip_compute_it_once(clip, model):
    rows = [{"src": str(clip), "frame": index} for index in range(3)]
    outcome, runner, _ = run(rows, MaterializeConfig(), model)
    assert len(runner.tasks) == 1
    assert [row["saliency_mean"] for row in outcome.rows] == [0.5] * 3
    assert outcome.summary.ok == 3


def test_equivalent_paths_are_one_clip(clip, model):
    rows = [{"src": "clip.mp4"}, {"src": "sub/../clip.mp4"}]
    _, runner, _ = run(rows, MaterializeConfig(root=clip.parent), model)
    assert len(runner.tasks) == 1


def test_failure_is_replayed_to_sibling_rows_with_detail(clip, model):
    failed = ClipResult("decode-failed", detail="boom")
    rows = [{"src": str(clip)} for _ in range(3)]
    outcome, runner, _ = run(rows, MaterializeConfig(), model, failed)
    assert len(runner.tasks) == 1
    assert [row["saliency_status"] for row in outcome.rows] == ["decode-failed"] * 3
    assert all(row["saliency_error"] == "boom" for row in outcome.rows)
    assert "saliency_mean" not in outcome.rows[0]
    assert outcome.summary.failed == 3


def test_existing_values_are_skipped_without_invented_metadata(model):
    rows = [
        {
            "src": "missing.mp4",
            "saliency_mean": 0.2,
            "saliency_var": "0.01",
            "saliency_status": "ok",
        }
    ]
    outcome, runner, _ = run(rows, MaterializeConfig(), model)
    row = outcome.rows[0]
    assert runner.tasks == []
    assert row["saliency_status"] == "skipped-existing"
    assert (row["saliency_mean"], row["saliency_var"]) == (0.2, "0.01")
    assert "saliency_model_id" not in row
    assert outcome.summary.skipped_existing == 1


@pytest.mark.parametrize("value", [None, "NaN", math.nan, "abc", math.inf])
def test_non_finite_existing_values_are_recomputed(clip, model, value):
    outcome, runner, _ = run(
        [{"src": str(clip), "saliency_mean": value, "saliency_var": 0.1}],
        MaterializeConfig(),
        model,
    )
    assert len(runner.tasks) == 1
    assert outcome.rows[0]["saliency_status"] == "ok"


def test_overwrite_recomputes_existing(clip, model):
    rows = [{"src": str(clip), "saliency_mean": 0.9, "saliency_var": 0.9}]
    outcome, _, _ = run(rows, MaterializeConfig(overwrite=True), model)
    assert outcome.rows[0]["saliency_mean"] == 0.5


def test_failed_overwrite_clears_stale_values_and_metadata(clip, model):
    rows = [
        {
            "src": str(clip),
            "saliency_mean": 0.9,
            "saliency_var": 0.9,
            "saliency_model_id": "old",
            "saliency_aggregator": "mean",
        }
    ]
    outcome, _, _ = run(
        rows, MaterializeConfig(overwrite=True), model, ClipResult("model-failed", detail="x")
    )
    row = outcome.rows[0]
    assert row["saliency_status"] == "model-failed"
    assert row["saliency_mean"] is None and row["saliency_var"] is None
    assert row["saliency_model_id"] is None and row["saliency_aggregator"] is None


def test_missing_source_never_reaches_the_runner(tmp_path, model):
    outcome, runner, log = run([{"src": "missing.mp4"}], MaterializeConfig(root=tmp_path), model)
    assert runner.tasks == []
    assert outcome.rows[0]["saliency_status"] == "missing-source"
    assert "missing.mp4" in outcome.rows[0]["saliency_error"]
    assert "all 1 failures have status 'missing-source'" in log


def test_all_missing_warning_fires_even_without_status_column(tmp_path, model):
    _, _, log = run(
        [{"src": "missing.mp4"}], MaterializeConfig(root=tmp_path, status_column=""), model
    )
    assert "all 1 failures have status 'missing-source'" in log


def test_missing_path_column_warns_once(model):
    _, _, log = run([{"path": "a.mp4"}, {"path": "b.mp4"}], MaterializeConfig(), model)
    assert log.count("path_column='src' not found in row") == 1
    assert "['path']" in log


@pytest.mark.parametrize("value", [math.nan, 3, ["a.mp4"], {"p": 1}])
def test_non_string_paths_are_missing_source(model, value):
    outcome, _, _ = run([{"src": value}], MaterializeConfig(), model)
    assert outcome.rows[0]["saliency_status"] == "missing-source"
    assert "not a path" in outcome.rows[0]["saliency_error"]


def test_directory_is_missing_source(tmp_path, model):
    (tmp_path / "dir.mp4").mkdir()
    outcome, _, _ = run([{"src": "dir.mp4"}], MaterializeConfig(root=tmp_path), model)
    assert "is a directory" in outcome.rows[0]["saliency_error"]


def test_disabled_columns_are_not_written(clip, model):
    config = MaterializeConfig(
        status_column="",
        model_id_column="",
        aggregator_column="",
        ema_alpha_column="",
        error_column="",
        sampling_column="",
        inference_size_column="",
        transfer_column="",
    )
    outcome, _, _ = run([{"src": str(clip)}], config, model)
    assert set(outcome.rows[0]) == {"src", "saliency_mean", "saliency_var"}


def test_raw_geometry_order_row_then_default_then_file_name(tmp_path, model):
    for name in ("a.yuv", "b_64x48_25fps.yuv"):
        (tmp_path / name).write_bytes(b"\0" * 10)
    rows = [
        {"src": "a.yuv", "width": 32, "height": 16},
        {"src": "a.yuv"},
        {"src": "b_64x48_25fps.yuv"},
    ]
    _, runner, _ = run(
        rows, MaterializeConfig(root=tmp_path, default_width=8, default_height=8), model
    )
    geometries = [(s.raw_width, s.raw_height) for _, s in runner.tasks]
    assert geometries == [(32, 16), (8, 8), (8, 8)]
    _, runner, _ = run(rows[2:], MaterializeConfig(root=tmp_path), model)
    assert [(s.raw_width, s.raw_height) for _, s in runner.tasks] == [(64, 48)]


def test_raw_rows_with_different_geometry_are_different_clips(tmp_path, model):
    (tmp_path / "a.yuv").write_bytes(b"\0" * 10)
    rows = [{"src": "a.yuv", "width": 32, "height": 16}, {"src": "a.yuv", "width": 16, "height": 8}]
    _, runner, _ = run(rows, MaterializeConfig(root=tmp_path), model)
    assert len(runner.tasks) == 2


def test_raw_without_geometry_is_missing_geometry(tmp_path, model):
    (tmp_path / "a.yuv").write_bytes(b"\0" * 10)
    outcome, runner, _ = run([{"src": "a.yuv"}], MaterializeConfig(root=tmp_path), model)
    assert runner.tasks == []
    assert outcome.rows[0]["saliency_status"] == "missing-geometry"


def test_raw_pix_fmt_comes_from_column_then_default(tmp_path, model):
    (tmp_path / "a.yuv").write_bytes(b"\0" * 10)
    rows = [
        {"src": "a.yuv", "width": 8, "height": 8, "pix_fmt": "yuv420p10le"},
        {"src": "a.yuv", "width": 8, "height": 8},
    ]
    _, runner, _ = run(rows, MaterializeConfig(root=tmp_path, default_pix_fmt="yuv420p"), model)
    assert [s.raw_pix_fmt for _, s in runner.tasks] == ["yuv420p10le", "yuv420p"]


def test_confine_to_root_rejects_escaping_paths(tmp_path, model):
    inside = tmp_path / "root"
    inside.mkdir()
    (tmp_path / "outside.mp4").write_bytes(b"x")
    outcome, runner, _ = run(
        [{"src": "../outside.mp4"}], MaterializeConfig(root=inside, confine_to_root=True), model
    )
    assert runner.tasks == []
    assert "outside root" in outcome.rows[0]["saliency_error"]


def test_input_rows_are_not_modified(clip, model):
    rows = [{"src": str(clip)}]
    run(rows, MaterializeConfig(), model)
    assert rows == [{"src": str(clip)}]
