"""Table reading and writing: formats, strict JSON, atomic writes, errors naming the line."""

import json
import math
import os

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from saliency_assets.core.tables import Table, TableError, read_table, write_table


def test_jsonl_roundtrip_keeps_rows_and_order(tmp_path):
    rows = [{"src": "a.mp4", "width": 4}, {"src": "b.mp4", "width": 8}]
    path = tmp_path / "features.jsonl"
    write_table(path, Table(rows))
    assert read_table(path).rows == rows


def test_jsonl_output_is_strict_json_without_nan(tmp_path):
    path = tmp_path / "out.jsonl"
    write_table(path, Table([{"saliency_mean": math.nan, "x": math.inf}]))
    text = path.read_text()
    assert "NaN" not in text and "Infinity" not in text
    assert json.loads(text) == {"saliency_mean": None, "x": None}


def test_jsonl_keeps_input_key_order(tmp_path):
    path = tmp_path / "out.jsonl"
    write_table(path, Table([{"z": 1, "a": 2}]))
    assert path.read_text() == '{"z":1,"a":2}\n'


def test_blank_lines_are_skipped(tmp_path):
    path = tmp_path / "in.jsonl"
    path.write_text('{"a": 1}\n\n   \n{"a": 2}\n')
    assert read_table(path).rows == [{"a": 1}, {"a": 2}]


def test_malformed_line_names_file_and_line(tmp_path):
    path = tmp_path / "in.jsonl"
    path.write_text('{"a": 1}\n{"a": \n')
    with pytest.raises(TableError, match=r"line 2 is not valid JSON"):
        read_table(path)


def test_non_object_line_is_rejected(tmp_path):
    path = tmp_path / "in.jsonl"
    path.write_text("[1, 2]\n")
    with pytest.raises(TableError, match="line 1 must be a JSON object"):
        read_table(path)


def test_unknown_extension_is_rejected(tmp_path):
    with pytest.raises(TableError, match=".jsonl or .parquet"):
        read_table(tmp_path / "table.csv")


def test_parquet_roundtrip_keeps_column_types_and_nulls(tmp_path):
    source = pa.table(
        {
            "src": ["a.mp4", "b.mp4"],
            "frame": pa.array([1, None], type=pa.int64()),
            "score": pa.array([0.5, None], type=pa.float32()),
        }
    )
    path = tmp_path / "in.parquet"
    pq.write_table(source, path)
    table = read_table(path)
    for row in table.rows:
        row["saliency_mean"] = 0.25
    out = tmp_path / "out.parquet"
    write_table(out, table)
    written = pq.read_table(out)
    assert written.schema.field("frame").type == pa.int64()
    assert written.schema.field("score").type == pa.float32()
    assert written.column("frame").to_pylist() == [1, None]
    assert written.column_names == ["src", "frame", "score", "saliency_mean"]


def test_parquet_to_jsonl_writes_nulls(tmp_path):
    path = tmp_path / "in.parquet"
    pq.write_table(pa.table({"x": pa.array([None, 1.5])}), path)
    out = tmp_path / "out.jsonl"
    write_table(out, read_table(path))
    assert out.read_text() == '{"x":null}\n{"x":1.5}\n'


def test_mixed_kinds_in_a_new_column_are_written_as_text(tmp_path):
    out = tmp_path / "out.parquet"
    write_table(out, Table([{"x": 1}, {"x": "two"}]))
    assert pq.read_table(out).column("x").to_pylist() == ["1", "two"]


def test_failed_write_leaves_previous_file_and_no_temp(tmp_path):
    out = tmp_path / "out.jsonl"
    out.write_text("previous\n")

    class Unwritable:
        pass

    with pytest.raises(TypeError):
        write_table(out, Table([{"ok": 1}, {"bad": Unwritable()}]))
    assert out.read_text() == "previous\n"
    assert os.listdir(tmp_path) == ["out.jsonl"]
