"""Table reading and writing: formats, strict JSON, atomic writes, errors naming the line."""

import json
import math
import os
import re
import socket
import subprocess
import sys

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from saliency_assets.core.tables.table_files import (
    CELL_BYTES,
    MAX_TABLE_GIB_ENV,
    ROW_BYTES,
    Table,
    TableError,
    read_table,
    write_table,
)


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


def per_frame_table(rows: int, features: int) -> pa.Table:
    columns = {"src": pa.array([f"clip_{index // 300:04d}.mp4" for index in range(rows)])}
    for feature in range(features):
        columns[f"feature_{feature:02d}"] = pa.nulls(rows, pa.float64())
    return pa.table(columns)


def test_a_150000_row_per_frame_table_passes_the_memory_bound(tmp_path):
    path = tmp_path / "per_frame.parquet"
    pq.write_table(per_frame_table(150_000, 30), path)
    rows = read_table(path).rows
    assert len(rows) == 150_000 and len(rows[0]) == 31


def test_a_parquet_table_past_the_memory_bound_is_refused_unread(tmp_path, monkeypatch):
    """Rows cost memory even with one column: 49,999,999 one-cell rows (under the old cap of
    50,000,000 cells) are refused from the footer, and the override raises the bound."""
    path = tmp_path / "bomb.parquet"
    pq.write_table(pa.table({"src": pa.nulls(49_999_999, pa.string())}), path)
    with pytest.raises(TableError) as refused:
        read_table(path)
    message = str(refused.value)
    assert message.startswith(f"{path}: 49999999 rows with 49999999 values would take about")
    assert "more than the 8 GiB allowed" in message and MAX_TABLE_GIB_ENV in message
    monkeypatch.setenv(MAX_TABLE_GIB_ENV, "0.001")
    pq.write_table(per_frame_table(1000, 1), path)
    with pytest.raises(TableError, match="more than the 0.001 GiB allowed"):
        read_table(path)


def test_a_jsonl_table_past_the_memory_bound_is_refused_while_streaming(tmp_path, monkeypatch):
    """The bound holds 100.5 two-key rows: the 101st line is refused, and named."""
    monkeypatch.setenv(MAX_TABLE_GIB_ENV, str(100.5 * (ROW_BYTES + 2 * CELL_BYTES) / 2**30))
    path = tmp_path / "in.jsonl"
    lines = [json.dumps({"src": "a.mp4", "x": index}) + "\n" for index in range(150)]
    path.write_text("".join(lines))
    with pytest.raises(TableError, match=rf"^{path}: line 101: 101 rows with 202 values"):
        read_table(path)


def test_a_bad_memory_bound_is_an_error_naming_the_variable(tmp_path, monkeypatch):
    monkeypatch.setenv(MAX_TABLE_GIB_ENV, "lots")
    path = tmp_path / "in.jsonl"
    path.write_text('{"a": 1}\n')
    with pytest.raises(TableError, match=f"{MAX_TABLE_GIB_ENV}='lots' must be a number"):
        read_table(path)


def test_parquet_rows_share_repeated_text_and_equal_to_pylist(tmp_path):
    source = pa.table(
        {
            "src": ["a.mp4", "a.mp4", None, "b.mp4"],
            "tags": [["x"], [], None, ["y", "z"]],
            "big": pa.array(["p", "p", "q", None], pa.large_string()),
        }
    )
    path = tmp_path / "in.parquet"
    pq.write_table(source, path)
    rows = read_table(path).rows
    assert rows == source.to_pylist()
    assert rows[0]["src"] is rows[1]["src"] and rows[0]["big"] is rows[1]["big"]


def test_stale_temp_files_of_the_old_naming_are_removed_too(tmp_path):
    """Temp files named by versions before the fixed-length names (".<target>.<host>.<pid>.
    <random>.tmp") of a dead writer on this host are removed by the next write; a live
    writer's are kept."""
    host = re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname()) or "host"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    stale = tmp_path / f".out.jsonl.{host}.{int(dead.stdout)}.k3j4h5.tmp"
    live = tmp_path / f".out.jsonl.{host}.{os.getpid()}.a1b2c3.tmp"
    stale.write_text("half")
    live.write_text("being written")
    write_table(tmp_path / "out.jsonl", Table([{"a": 1}]))
    assert sorted(path.name for path in tmp_path.iterdir()) == [live.name, "out.jsonl"]
