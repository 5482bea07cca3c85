"""Whatever a table holds, materializing it keeps every row, in order, and every column other than
the saliency ones exactly as it was: JSONL values parsed back are identical (types included, floats
bit for bit, with the one documented normalisation that JSONL output is strict JSON, so NaN and
Infinity become null); Parquet columns keep their Arrow type and their values bit for bit.

Hypothesis drives the engine's table path (read, plan, join, write) with a fake clip runner at
the engine seam; a handful of fixed tables go through the real command with real clips.
"""

from __future__ import annotations

import datetime
import decimal
import io
import json
import math
import shutil
import struct
import tempfile
import zlib
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support.bounded import run_command
from support.clips import make_clip

from saliency_assets.core.contract.config import MaterializeConfig
from saliency_assets.core.model.clip_saliency import ClipResult
from saliency_assets.core.model.saliency_model import choose_model
from saliency_assets.core.run.table_run import materialize_table

CONFIG = MaterializeConfig()
SALIENCY_COLUMNS = {
    "saliency_mean",
    "saliency_var",
    CONFIG.status_column,
    CONFIG.error_column,
    CONFIG.model_id_column,
    CONFIG.aggregator_column,
    CONFIG.ema_alpha_column,
    CONFIG.sampling_column,
    CONFIG.inference_size_column,
}
CLIP_NAMES = ["a.mp4", "b.mkv", "c d ü.mp4", "raw_64x48.yuv"]
PROPERTY_SETTINGS = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


class FakeRunner:
    """Computes nothing: a clip's result follows from its key (some ok, some failed)."""

    def __call__(self, tasks):
        for key, _source in tasks:
            code = zlib.crc32(key.encode("utf-8", "surrogatepass"))
            if code % 3 == 0:
                yield key, ClipResult("decode-failed", detail=f"fake failure of {key}")
            else:
                yield key, ClipResult("ok", (code % 1000) / 1000, (code % 97) / 1e4)


@pytest.fixture(scope="module")
def model():
    return choose_model(None, None)


@pytest.fixture(scope="module")
def clip_root(tmp_path_factory) -> Path:
    """Files the fake runner is handed (their contents are never read)."""
    root = tmp_path_factory.mktemp("property_clips")
    for name in CLIP_NAMES:
        (root / name).write_bytes(b"not decoded by the fake runner")
    return root


# --------------------------------------------------------------------------- JSONL

SURROGATES = st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF)
TEXT = st.text(st.one_of(st.characters(), SURROGATES), max_size=10)
KNOWN_KEYS = st.sampled_from(
    ["src", "width", "height", "pix_fmt", "saliency_mean", "saliency_var", "saliency_status"]
)
JSON_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**80), max_value=2**80),
    st.floats(),
    st.sampled_from([-0.0, math.nan, math.inf, -math.inf, 5e-324, -1.7976931348623157e308]),
    TEXT,
)
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(TEXT, inner, max_size=4),
    max_leaves=10,
)
PATH_VALUES = st.one_of(st.sampled_from(CLIP_NAMES), JSON_VALUES)
JSON_ROWS = st.builds(
    lambda row, path: {**row, **path},
    st.dictionaries(st.one_of(KNOWN_KEYS, TEXT), JSON_VALUES, max_size=6),
    st.one_of(st.just({}), st.fixed_dictionaries({"src": PATH_VALUES})),
)


@PROPERTY_SETTINGS
@given(rows=st.lists(JSON_ROWS, max_size=25), overwrite=st.booleans())
def test_jsonl_rows_and_columns_survive_whatever_they_hold(model, clip_root, rows, overwrite):
    config = MaterializeConfig(root=clip_root, overwrite=overwrite)
    with tempfile.TemporaryDirectory() as scratch:
        source, output = Path(scratch) / "in.jsonl", Path(scratch) / "out.jsonl"
        source.write_text("".join(json.dumps(row) + "\n" for row in rows))
        run = materialize_table(source, output, config, model, FakeRunner(), None, io.StringIO())
        written = [json.loads(line) for line in output.read_text().splitlines()]
    assert len(written) == len(rows) == run.summary["total"]
    for before, after in zip(rows, written, strict=True):
        assert_row_kept(before, after)


def assert_row_kept(before: dict[str, Any], after: dict[str, Any]) -> None:
    """Input keys come first in their order; other columns equal (strict-JSON normalised);
    a skipped row keeps its saliency values."""
    assert [key for key in after if key in before] == list(before)
    kept = [key for key in before if key not in SALIENCY_COLUMNS]
    if after.get(CONFIG.status_column) == "skipped-existing":
        kept += ["saliency_mean", "saliency_var"]
    for key in kept:
        assert identical(after[key], strict_json(before[key])), key


def strict_json(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: strict_json(item) for key, item in value.items()}
    if isinstance(value, list):
        return [strict_json(item) for item in value]
    return value


def identical(left: Any, right: Any) -> bool:
    """Equal with types compared too (True is not 1) and floats compared bit for bit."""
    if type(left) is not type(right):
        return False
    if isinstance(left, float):
        return struct.pack("<d", left) == struct.pack("<d", right)
    if isinstance(left, dict):
        return list(left) == list(right) and all(identical(left[k], right[k]) for k in left)
    if isinstance(left, (list, tuple)):
        return len(left) == len(right) and all(map(identical, left, right))
    return left == right


# --------------------------------------------------------------------------- Parquet

NAMES = st.text(st.characters(exclude_categories=["Cs"]), min_size=1, max_size=8)
INT64 = st.integers(min_value=-(2**63), max_value=2**63 - 1)
COLUMN_KINDS = {
    "int64": (pa.int64(), INT64),
    "uint64": (pa.uint64(), st.integers(min_value=0, max_value=2**64 - 1)),
    "int8": (pa.int8(), st.integers(min_value=-128, max_value=127)),
    "float64": (pa.float64(), st.floats()),
    "float32": (pa.float32(), st.floats(width=32)),
    "bool": (pa.bool_(), st.booleans()),
    "string": (pa.string(), st.text(st.characters(exclude_categories=["Cs"]), max_size=8)),
    "large_string": (pa.large_string(), st.text(max_size=8)),
    "binary": (pa.binary(), st.binary(max_size=8)),
    "fixed_binary": (pa.binary(3), st.binary(min_size=3, max_size=3)),
    "list<int64>": (pa.list_(pa.int64()), st.lists(st.none() | INT64, max_size=4)),
    "list<list<string>>": (
        pa.list_(pa.list_(pa.string())),
        st.lists(st.none() | st.lists(st.none() | st.text(max_size=4), max_size=3), max_size=3),
    ),
    "struct": (
        pa.struct([("a", pa.int64()), ("b", pa.string())]),
        st.fixed_dictionaries({"a": st.none() | INT64, "b": st.none() | st.text(max_size=4)}),
    ),
    "map": (
        pa.map_(pa.string(), pa.float64()),
        st.dictionaries(st.text(max_size=3), st.none() | st.floats(), max_size=3).map(
            lambda mapping: list(mapping.items())
        ),
    ),
    "timestamp[us]": (pa.timestamp("us"), st.datetimes()),
    "timestamp[ms, UTC]": (
        pa.timestamp("ms", tz="UTC"),
        st.datetimes(
            min_value=datetime.datetime(1900, 1, 1), max_value=datetime.datetime(2200, 1, 1)
        ).map(lambda moment: moment.replace(microsecond=0, tzinfo=datetime.UTC)),
    ),
    "date32": (pa.date32(), st.dates()),
    "time64[us]": (pa.time64("us"), st.times()),
    "duration[s]": (
        pa.duration("s"),
        st.integers(min_value=-(10**9), max_value=10**9).map(
            lambda seconds: datetime.timedelta(seconds=seconds)
        ),
    ),
    "decimal(12,3)": (
        pa.decimal128(12, 3),
        st.decimals(min_value=-(10**8), max_value=10**8, places=3, allow_nan=False),
    ),
    "dictionary<string>": (
        pa.dictionary(pa.int32(), pa.string()),
        st.sampled_from(["x", "y", "ü", ""]),
    ),
    "null": (pa.null(), st.none()),
}


@st.composite
def parquet_tables(draw) -> pa.Table:
    """A table of 0-20 rows and 0-6 columns of random kinds (nullable), sometimes with a
    ``src`` column naming clips."""
    rows = draw(st.integers(min_value=0, max_value=20))
    names = draw(
        st.lists(NAMES | st.sampled_from(sorted(SALIENCY_COLUMNS)), max_size=6, unique=True)
    )
    if draw(st.booleans()):
        names = ["src", *[name for name in names if name != "src"]]
    columns = {}
    for name in names:
        kind = "src" if name == "src" else draw(st.sampled_from(sorted(COLUMN_KINDS)))
        arrow_type, values = (
            (pa.string(), st.sampled_from(CLIP_NAMES) | st.text(max_size=6))
            if kind == "src"
            else COLUMN_KINDS[kind]
        )
        cells = draw(st.lists(st.none() | values, min_size=rows, max_size=rows))
        columns[name] = pa.array(cells, type=arrow_type)
    return pa.table(columns or {"only nulls": pa.nulls(rows)})


@PROPERTY_SETTINGS
@given(table=parquet_tables(), overwrite=st.booleans())
def test_parquet_rows_and_columns_survive_whatever_they_hold(model, clip_root, table, overwrite):
    config = MaterializeConfig(root=clip_root, overwrite=overwrite)
    with tempfile.TemporaryDirectory() as scratch:
        source, output = Path(scratch) / "in.parquet", Path(scratch) / "out.parquet"
        pq.write_table(table, source)
        before = pq.read_table(source)
        materialize_table(source, output, config, model, FakeRunner(), None, io.StringIO())
        after = pq.read_table(output)
    assert_columns_kept(before, after)


def assert_columns_kept(before: pa.Table, after: pa.Table) -> None:
    assert after.num_rows == before.num_rows
    assert after.column_names[: before.num_columns] == before.column_names
    statuses = after.column(CONFIG.status_column).to_pylist() if after.num_rows else []
    for name in before.column_names:
        if name in SALIENCY_COLUMNS and not (
            name in ("saliency_mean", "saliency_var") and "skipped-existing" in statuses
        ):
            continue
        assert after.schema.field(name).type == before.schema.field(name).type, name
        old, new = before.column(name).to_pylist(), after.column(name).to_pylist()
        if name in SALIENCY_COLUMNS:  # only the skipped rows' values are kept
            skipped = [i for i, status in enumerate(statuses) if status == "skipped-existing"]
            old, new = [old[i] for i in skipped], [new[i] for i in skipped]
        assert identical(new, old), name


# --------------------------------------------------------------------------- real command


@pytest.fixture(scope="module")
def real_clips(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("property_real")
    make_clip(root / "a.mp4", 64, 48, 3)
    shutil.copy(root / "a.mp4", root / "c d ü.mp4")
    make_clip(root / "b.mkv", 96, 64, 3)
    return root


REAL_JSONL_ROWS = [
    {"src": "a.mp4", "frame": 0, "mos": 3.25, "tags": ["a", {"b": None}], "flag": True},
    {"src": "c d ü.mp4", "frame": 1, "mos": math.nan, "note": "\ud800 lone", "big": 2**70},
    {"src": "missing.mp4", "frame": 2, "mos": -0.0, "nested": [[[1.5e-300]]], "": "empty key"},
    {"src": ["not", "a", "path"], "frame": 3, "saliency_mean": "0.2", "saliency_var": "0.1"},
    {"frame": 4, "width": "wide", "height": None, "mos": math.inf},
    {"src": "b.mkv", "frame": 5, "saliency_mean": math.nan, "saliency_var": 1, "x": {"y": []}},
    {"src": "a.mp4", "frame": 6, "日本": "語", "mos": 1e308, "flag": False},
]


def test_jsonl_through_the_command(real_clips, tmp_path):
    source, output = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    source.write_text("".join(json.dumps(row) + "\n" for row in REAL_JSONL_ROWS))
    args = ["materialize", "--input", source, "--output", output, *real_flags(real_clips)]
    done = run_command(args)
    assert done.returncode == 1 and not done.crashed, done.describe()  # missing.mp4 fails
    written = [json.loads(line) for line in output.read_text().splitlines()]
    assert len(written) == len(REAL_JSONL_ROWS)
    for before, after in zip(REAL_JSONL_ROWS, written, strict=True):
        assert_row_kept(before, after)
    assert [row["saliency_status"] for row in written] == [
        "ok",
        "ok",
        "missing-source",
        "skipped-existing",
        "missing-source",
        "ok",
        "ok",
    ]


D, T = datetime.datetime, datetime.timedelta
FIXED_COLUMNS = {
    "int64": [2**63 - 1, -(2**63), 0, None, 7],
    "uint64": [2**64 - 1, 0, None, 1, 2],
    "int8": [-128, 127, None, 0, 1],
    "float64": [math.nan, -0.0, math.inf, None, 5e-324],
    "float32": [math.nan, -0.0, -math.inf, None, 1.5],
    "bool": [True, False, None, True, False],
    "string": ["ü 日本", "", None, "a\nb", "\x00"],
    "large_string": ["x" * 100, "", None, "🎬", " "],
    "binary": [b"\x00\xff", b"", None, b"abc", b"\n"],
    "fixed_binary": [b"abc", b"\x00\x00\x00", None, b"xyz", b"123"],
    "list<int64>": [[1, None], [], None, [2**62], [0]],
    "list<list<string>>": [[["a"], None], [], None, [[]], [["ü", None]]],
    "struct": [
        {"a": 1, "b": "x"},
        {"a": None, "b": None},
        None,
        {"a": -1, "b": ""},
        {"a": 0, "b": "ü"},
    ],
    "map": [[("k", 1.0)], [], None, [("a", math.nan), ("b", None)], [("ü", -0.0)]],
    "timestamp[us]": [
        D(2020, 1, 2, 3, 4, 5, 6),
        D(1, 1, 1),
        None,
        D(9999, 12, 31, 23, 59),
        D(1970, 1, 1),
    ],
    "timestamp[ms, UTC]": [
        D(2020, 1, 2, 3, 4, 5, tzinfo=datetime.UTC),
        D(1900, 1, 1, tzinfo=datetime.UTC),
        None,
        D(2200, 1, 1, tzinfo=datetime.UTC),
        D(1970, 1, 1, tzinfo=datetime.UTC),
    ],
    "date32": [
        datetime.date(2020, 1, 1),
        datetime.date(1, 1, 1),
        None,
        datetime.date(9999, 12, 31),
        datetime.date(1970, 1, 1),
    ],
    "time64[us]": [
        datetime.time(0),
        datetime.time(23, 59, 59, 999999),
        None,
        datetime.time(12),
        datetime.time(1, 2, 3),
    ],
    "duration[s]": [T(seconds=1), T(seconds=-5), None, T(0), T(days=3)],
    "decimal(12,3)": [
        decimal.Decimal("1.250"),
        decimal.Decimal("-99999999.999"),
        None,
        decimal.Decimal("0.000"),
        decimal.Decimal("3.141"),
    ],
    "dictionary<string>": ["x", "y", None, "x", "ü"],
    "null": [None] * 5,
}


@pytest.mark.parametrize("rows", [0, 5])
def test_parquet_of_every_kind_through_the_command(real_clips, tmp_path, rows):
    names = ["a.mp4", "c d ü.mp4", "b.mkv", "missing.mp4", "a.mp4"][:rows]
    columns = {"src": pa.array(names, pa.string())}
    for kind, (arrow_type, _) in COLUMN_KINDS.items():
        columns[kind] = pa.array(FIXED_COLUMNS[kind][:rows], arrow_type)
    source, output = tmp_path / "in.parquet", tmp_path / "out.parquet"
    pq.write_table(pa.table(columns), source)
    args = ["materialize", "--input", source, "--output", output, *real_flags(real_clips)]
    done = run_command(args)
    assert done.returncode == (1 if rows else 0) and not done.crashed, done.describe()
    assert_columns_kept(pq.read_table(source), pq.read_table(output))


def real_flags(root: Path) -> list[Any]:
    return ["--root", root, "--jobs", "2", "--max-frames", "2", "--results-store", "none"]
