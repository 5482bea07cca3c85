"""Feature tables in and out: JSONL and Parquet in any mix, written atomically (``atomic``);
Parquet's reading and writing live in :mod:`.parquet_tables`, imported only for Parquet.

A table is a list of row dicts plus, for Parquet inputs, the Arrow schema it came with, so
untouched columns are written back with their own types.

JSONL input is read strictly and boundedly: every line must be one UTF-8 JSON object of at most
``MAX_LINE_BYTES`` bytes with no repeated key, and the first line that is not is reported by
number before anything is written. A UTF-8 byte order mark at the start is allowed. Rows are
held in memory, so a table's estimated memory (rows and cells) is bounded: a Parquet table's from
its footer before any row is read (a small file can expand a thousandfold), a JSONL table's as
its lines are read.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Collection, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from saliency_assets.core.tables import filesystems
from saliency_assets.core.tables.atomic import atomic_write

if TYPE_CHECKING:
    import pyarrow as pa

TABLE_SUFFIXES = (".jsonl", ".parquet")
# The longest JSONL line read (newline excluded); a longer one is rejected unread, not loaded.
MAX_LINE_BYTES = 32 * 1024 * 1024
# Every row is held as a dict, so a table's memory is bounded before it is read: about
# ROW_BYTES per row plus CELL_BYTES per cell (measured with benchmarks/table_memory.py, through
# read, enrich and write, rounded up), at most MAX_TABLE_GIB (or $SALIENCY_ASSETS_MAX_TABLE_GIB).
ROW_BYTES = 1200
CELL_BYTES = 140
MAX_TABLE_GIB = 8.0
MAX_TABLE_GIB_ENV = "SALIENCY_ASSETS_MAX_TABLE_GIB"
_UTF8_BOM = b"\xef\xbb\xbf"
# Rows of kept columns turned back into Python objects at a time, when JSONL is written.
_KEPT_BATCH_ROWS = 4096


class TableError(ValueError):
    """A table cannot be read or written; the message names the file (and line)."""


@dataclass
class Table:
    rows: list[dict[str, Any]]
    schema: pa.Schema | None = None
    # The columns of a Parquet input read with ``row_columns`` that are not in ``rows``: they
    # stay columnar (Arrow) and are written back as read, never becoming Python objects.
    kept: pa.Table | None = None


def table_format(path: Path) -> str:
    """``jsonl`` or ``parquet`` from the file name, case-insensitively."""
    suffix = Path(path).suffix.lower()
    if suffix not in TABLE_SUFFIXES:
        raise TableError(f"{path}: a table must end in .jsonl or .parquet")
    return suffix[1:]


def read_table(path: Path, row_columns: Collection[str] | None = None) -> Table:
    """Read every row; a malformed file is a TableError naming the file and line.

    With ``row_columns``, a Parquet table's rows hold only those of its columns, and the others
    stay in ``Table.kept`` (a row dict and an object per cell cost ~10x the Arrow column).
    """
    path = Path(path)
    kind = table_format(path)
    if not filesystems.is_file(path):
        raise TableError(
            f"{filesystems.display(path)}: input table does not exist or is not a file"
        )
    if kind == "jsonl":
        return _read_jsonl(path)
    from saliency_assets.core.tables import parquet_tables  # pyarrow, for Parquet alone

    return parquet_tables.read_parquet(path, row_columns)


def write_table(path: Path, table: Table) -> None:
    """Write atomically: readers see the old file or the whole new one, never a part."""
    path = Path(path)
    kind = table_format(path)
    if kind == "jsonl":
        atomic_write(path, lambda handle: _write_jsonl(handle, _whole_rows(table)))
    else:
        from saliency_assets.core.tables import parquet_tables

        parquet_tables.write_parquet(path, table)


def write_json_atomic(path: Path, payload: Any) -> None:
    """Deterministic JSON (indent 2, sorted keys, strict: no NaN) plus a newline, atomically."""
    text = json.dumps(strict_json(payload), indent=2, sort_keys=True, allow_nan=False) + "\n"
    atomic_write(path, lambda handle: handle.write(text.encode("utf-8")))


def write_text_atomic(path: Path, text: str) -> None:
    atomic_write(path, lambda handle: handle.write(text.encode("utf-8")))


def strict_json(value: Any) -> Any:
    """Replace non-finite floats by None, recursively, so the output is strict JSON."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: strict_json(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [strict_json(item) for item in value]
    return value


def object_with_unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """``json.loads`` hook: a JSON object as a dict. A repeated key would silently drop a value,
    so it raises ``ValueError`` naming the key."""
    record = dict(pairs)
    if len(record) != len(pairs):
        seen: set[str] = set()
        repeated = next(key for key, _ in pairs if key in seen or seen.add(key))
        raise ValueError(f"key {repeated!r} appears more than once in one object")
    return record


def _read_jsonl(path: Path) -> Table:
    rows = []
    budget = MemoryBudget(path)
    with filesystems.open_input(path) as handle:
        for line_number, line in _jsonl_lines(path, handle):
            text = line.strip()
            if text:
                row = _parse_jsonl_row(path, line_number, text)
                budget.take(1, len(row), f"line {line_number}: ")
                rows.append(row)
    return Table(rows)


class MemoryBudget:
    """The memory a table's rows are estimated to take, refused past the limit with one line
    naming the file, the limit and how to raise it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.limit_gib = _max_table_gib(path)
        self.rows = self.cells = 0

    def take(self, rows: int, cells: int, where: str = "") -> None:
        self.rows += rows
        self.cells += cells
        estimate = self.rows * ROW_BYTES + self.cells * CELL_BYTES
        if estimate > self.limit_gib * 2**30:
            raise TableError(
                f"{self.path}: {where}{self.rows} rows with {self.cells} values would take about "
                f"{estimate / 2**30:.1f} GiB of memory (every row is held), more than the "
                f"{self.limit_gib:g} GiB allowed; split the table or set {MAX_TABLE_GIB_ENV}"
            )


def _max_table_gib(path: Path) -> float:
    text = os.environ.get(MAX_TABLE_GIB_ENV, "")
    if not text:
        return MAX_TABLE_GIB
    try:
        limit = float(text)
    except ValueError:
        limit = math.nan
    if not limit > 0:
        raise TableError(f"{path}: {MAX_TABLE_GIB_ENV}={text!r} must be a number of GiB above 0")
    return limit


def _jsonl_lines(path: Path, handle: BinaryIO) -> Iterator[tuple[int, bytes]]:
    """Numbered lines, each read with a bound so an over-long line is never loaded whole."""
    line_number = 0
    while line := handle.readline(MAX_LINE_BYTES + 1):
        line_number += 1
        if len(line) > MAX_LINE_BYTES and not line.endswith(b"\n"):
            raise TableError(
                f"{path}: line {line_number} is longer than {MAX_LINE_BYTES} bytes, the most a "
                "JSONL row may hold; it was not read"
            )
        if line_number == 1 and line.startswith(_UTF8_BOM):
            line = line[len(_UTF8_BOM) :]
        yield line_number, line


def _parse_jsonl_row(path: Path, line_number: int, data: bytes) -> dict[str, Any]:
    where = f"{path}: line {line_number}"
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise TableError(f"{where} is not valid UTF-8 (byte {error.start})") from None
    return parse_json_object(text, where, TableError)


def parse_json_object(text: str, where: str, error_type: type[Exception]) -> dict[str, Any]:
    """One JSON object with unique keys; any way it is malformed raises ``error_type`` naming
    ``where`` (invalid JSON, nesting too deep, a repeated key, a huge integer, not an object)."""
    try:
        value = json.loads(text, object_pairs_hook=object_with_unique_keys)
    except json.JSONDecodeError as error:
        raise error_type(f"{where} is not valid JSON ({error.msg})") from None
    except RecursionError:
        raise error_type(f"{where} nests arrays or objects too deeply to read") from None
    except ValueError as error:  # a repeated key, or an integer of thousands of digits
        raise error_type(f"{where}: {error}") from None
    if not isinstance(value, dict):
        raise error_type(f"{where} must be a JSON object")
    return value


def _whole_rows(table: Table) -> Iterator[dict[str, Any]]:
    """The rows with their kept columns back in, in the input's column order, a batch at a
    time (so the kept columns never all become Python objects at once)."""
    if table.kept is None or table.kept.num_columns == 0:
        yield from table.rows
        return
    rows = iter(table.rows)
    for batch in table.kept.to_batches(max_chunksize=_KEPT_BATCH_ROWS):
        for kept_row in batch.to_pylist():
            yield _merged_row(next(rows), kept_row, table.schema.names)


def _merged_row(row: dict[str, Any], kept_row: dict[str, Any], names: list[str]) -> dict[str, Any]:
    merged = {}
    for name in names:
        if name in row:
            merged[name] = row[name]
        elif name in kept_row:
            merged[name] = kept_row[name]
    for name, value in row.items():
        merged.setdefault(name, value)
    return merged


def _write_jsonl(handle: BinaryIO, rows: Iterable[dict[str, Any]]) -> None:
    for row in rows:
        line = json.dumps(
            strict_json(row),
            ensure_ascii=True,
            separators=(",", ":"),
            allow_nan=False,
            default=_json_default,
        )
        handle.write(line.encode("ascii") + b"\n")


def _json_default(value: Any) -> Any:
    if hasattr(value, "isoformat"):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"cannot write {type(value).__name__} to JSONL")
