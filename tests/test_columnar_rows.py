"""A Parquet table's columns the engine never touches stay columnar through a run, and the
output is exactly what enriching whole rows gives: same columns, order, types and values, in
Parquet and in JSONL, on real clips with the real bundled model."""

from __future__ import annotations

import datetime as dt
import io

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from saliency_assets.core.contract.config import MaterializeConfig
from saliency_assets.core.run.engine import materialize_rows, prepare_model
from saliency_assets.core.run.table_run import materialize_table
from saliency_assets.core.tables.table_files import Table, read_table, write_table


def mixed_table(clip_dir) -> pa.Table:
    """Rows to compute, to skip (saliency present), to fail (missing clip), with untouched
    columns of many types and stale status and error values the engine rewrites."""
    clip = str(clip_dir / "clip.mp4")
    when = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
    return pa.table(
        {
            "frame": pa.array([0, 1, 2, 3], pa.int32()),
            "src": [clip, clip, "missing.mp4", clip],
            "feature": [0.5, None, 1.5, float("nan")],
            "tags": [["a"], [], None, ["b", "c"]],
            "label": pa.array(["x", "y", "x", None]).dictionary_encode(),
            "taken": pa.array([when, None, when, when], pa.timestamp("us", tz="UTC")),
            "saliency_mean": [None, 0.25, None, None],
            "saliency_var": [None, 0.01, None, None],
            "saliency_status": ["stale", "ok", "stale", None],
            "saliency_error": ["old error", None, None, "old"],
        }
    )


def whole_rows_output(source, output, config, model) -> None:
    """The reference: every column held in the rows, as before columns were kept."""
    table = read_table(source)
    outcome = materialize_rows(table.rows, config, model, store=None, log=io.StringIO())
    write_table(output, Table(outcome.rows, table.schema))


@pytest.mark.parametrize("overwrite", [False, True])
@pytest.mark.parametrize("suffix", [".parquet", ".jsonl"])
def test_kept_columns_give_the_whole_rows_output(tmp_path, clip_dir, overwrite, suffix):
    source = tmp_path / "in.parquet"
    pq.write_table(mixed_table(clip_dir), source)
    config = MaterializeConfig(jobs=1, results_store="none", overwrite=overwrite)
    model = prepare_model(config)
    output, expected = tmp_path / f"out{suffix}", tmp_path / f"expected{suffix}"
    run = materialize_table(source, output, config, model, store=None, log=io.StringIO())
    whole_rows_output(source, expected, config, model)
    assert run.summary["ok"] == (3 if overwrite else 2)
    assert output.read_bytes() == expected.read_bytes()


def test_kept_columns_are_not_held_as_rows(tmp_path, clip_dir):
    source = tmp_path / "in.parquet"
    pq.write_table(mixed_table(clip_dir), source)
    table = read_table(source, row_columns={"src", "saliency_mean", "saliency_status"})
    assert set(table.rows[0]) == {"src", "saliency_mean", "saliency_status"}
    assert table.kept.column_names == [
        "frame", "feature", "tags", "label", "taken", "saliency_var", "saliency_error"
    ]  # fmt: skip


def test_without_the_path_column_every_column_reaches_the_warning(tmp_path, clip_dir):
    source = tmp_path / "in.parquet"
    pq.write_table(mixed_table(clip_dir).rename_columns(["frame", "video", *"abcdefgh"]), source)
    config = MaterializeConfig(jobs=1, results_store="none")
    log = io.StringIO()
    materialize_table(source, tmp_path / "out.parquet", config, prepare_model(config), log=log)
    assert "available columns: ['a', 'b', 'c', 'd', 'e', 'f', 'frame', 'g', 'h', 'video']" in (
        log.getvalue()
    )
