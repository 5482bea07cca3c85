"""Feature tables in and out: JSONL and Parquet in any mix, written atomically.

A table is a list of row dicts plus, for Parquet inputs, the Arrow schema it came with, so
untouched columns are written back with their own types.

JSONL input is read strictly and boundedly: every line must be one UTF-8 JSON object of at most
``MAX_LINE_BYTES`` bytes with no repeated key, and the first line that is not is reported by
number before anything is written. A UTF-8 byte order mark at the start is allowed. Rows are
held in memory, so a Parquet table may have at most ``MAX_TABLE_CELLS`` cells (rows x columns),
checked from its footer before any row is read: a small file can expand a thousandfold.
"""

from __future__ import annotations

import json
import math
import os
import re
import socket
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import pyarrow as pa
import pyarrow.parquet as pq

from saliency_assets.core import filesystems

TABLE_SUFFIXES = (".jsonl", ".parquet")
# The longest JSONL line read (newline excluded); a longer one is rejected unread, not loaded.
MAX_LINE_BYTES = 32 * 1024 * 1024
# The most cells (rows x columns) a Parquet table may expand to; its rows are all held as dicts.
MAX_TABLE_CELLS = 50_000_000
_UTF8_BOM = b"\xef\xbb\xbf"
# Temp files of atomic writes: ".<target>.<host>.<pid>.<random>.tmp".
_HOST_TAG = re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname()) or "host"
_TEMP_NAME = re.compile(r"^\.(?P<target>.+)\.(?P<host>[A-Za-z0-9-]+)\.(?P<pid>\d+)\.[^.]+\.tmp$")


class TableError(ValueError):
    """A table cannot be read or written; the message names the file (and line)."""


@dataclass
class Table:
    rows: list[dict[str, Any]]
    schema: pa.Schema | None = None


def table_format(path: Path) -> str:
    """``jsonl`` or ``parquet`` from the file name, case-insensitively."""
    suffix = Path(path).suffix.lower()
    if suffix not in TABLE_SUFFIXES:
        raise TableError(f"{path}: a table must end in .jsonl or .parquet")
    return suffix[1:]


def read_table(path: Path) -> Table:
    """Read every row; a malformed file is a TableError naming the file and line."""
    path = Path(path)
    kind = table_format(path)
    if not _is_table_file(path):
        raise TableError(
            f"{filesystems.display(path)}: input table does not exist or is not a file"
        )
    return _read_jsonl(path) if kind == "jsonl" else _read_parquet(path)


def _is_table_file(path: Path) -> bool:
    if filesystems.is_object(path):
        return filesystems.stat(path).kind == "file"
    return path.is_file()


def write_table(path: Path, table: Table) -> None:
    """Write atomically: readers see the old file or the whole new one, never a part."""
    path = Path(path)
    kind = table_format(path)
    if kind == "jsonl":
        atomic_write(path, lambda handle: _write_jsonl(handle, table.rows))
    else:
        arrow_table = _to_arrow(path, table)
        atomic_write(path, lambda handle: pq.write_table(arrow_table, handle))


def atomic_write(path: Path, write: Callable[[BinaryIO], None]) -> None:
    """Write through a temp file in the same folder, fsync it, then rename over ``path``.

    The temp file is hidden and named after this host and process; temp files left in the
    folder by killed writers on this host are removed first. An ``s3://`` path is uploaded as
    one whole object instead (:func:`filesystems.write_object`).
    """
    if filesystems.is_object(path):
        filesystems.write_object(path, write)
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temp_files(path.parent)
    with _temp_beside(path) as (handle, temp_path):
        write(handle)
        handle.flush()
        os.fsync(handle.fileno())
        handle.close()
        os.replace(temp_path, path)


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


def remove_stale_temp_files(folder: Path) -> list[Path]:
    """Delete the temp files of writers on this host whose process is gone; return them.

    Only names ``atomic_write`` makes are considered, and a live or unknown writer's file is
    kept, so a concurrent writer is never disturbed.
    """
    removed = []
    for name in os.listdir(folder):
        match = _TEMP_NAME.match(name)
        if match and match["host"] == _HOST_TAG and not _process_alive(int(match["pid"])):
            (Path(folder) / name).unlink(missing_ok=True)
            removed.append(Path(folder) / name)
    return removed


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def temp_file_prefix(path: Path, pid: int | None = None) -> str:
    """How the names of ``atomic_write``'s temp files for ``path`` start (this host, ``pid``)."""
    return f".{Path(path).name}.{_HOST_TAG}.{os.getpid() if pid is None else pid}."


@contextmanager
def _temp_beside(path: Path) -> Iterator[tuple[BinaryIO, str]]:
    fd, temp_path = tempfile.mkstemp(prefix=temp_file_prefix(path), suffix=".tmp", dir=path.parent)
    handle = os.fdopen(fd, "wb")
    try:
        yield handle, temp_path
    finally:
        if not handle.closed:
            handle.close()
        if os.path.exists(temp_path):
            os.unlink(temp_path)


def _read_jsonl(path: Path) -> Table:
    rows = []
    with filesystems.open_input(path) as handle:
        for line_number, line in _jsonl_lines(path, handle):
            text = line.strip()
            if text:
                rows.append(_parse_jsonl_row(path, line_number, text))
    return Table(rows)


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


def _read_parquet(path: Path) -> Table:
    try:
        if filesystems.is_object(path):
            with filesystems.open_input(path) as handle:
                arrow_table = _read_checked_parquet(path, handle)
        else:
            arrow_table = _read_checked_parquet(path, path)
        # Nulls stay None (not NaN as pandas would give) so an untouched column round-trips.
        return Table(arrow_table.to_pylist(), arrow_table.schema)
    except (pa.ArrowException, OSError) as error:
        cause = " ".join(str(error).split())
        raise TableError(f"{path}: cannot read Parquet ({cause})") from None
    except MemoryError:
        raise TableError(f"{path}: the table does not fit in memory") from None


def _read_checked_parquet(path: Path, source: Path | BinaryIO) -> pa.Table:
    """``source``'s table once its footer passed the checks (local files read by pyarrow)."""
    _check_parquet_footer(path, pq.read_metadata(source))
    return pq.read_table(source)


def _check_parquet_footer(path: Path, metadata: pq.FileMetaData) -> None:
    names = metadata.schema.to_arrow_schema().names
    duplicated = sorted({name for name in names if names.count(name) > 1})
    if duplicated:
        raise TableError(f"{path}: duplicated column names {duplicated}")
    cells = metadata.num_rows * max(1, len(names))
    if cells > MAX_TABLE_CELLS:
        raise TableError(
            f"{path}: {metadata.num_rows} rows x {len(names)} columns is more than the "
            f"{MAX_TABLE_CELLS} cells a table may hold (every row is kept in memory); split it"
        )


def _write_jsonl(handle: BinaryIO, rows: list[dict[str, Any]]) -> None:
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


def _to_arrow(path: Path, table: Table) -> pa.Table:
    """Columns in first-seen order; columns of the input schema keep their Arrow types (and
    are kept even when the table has no rows)."""
    names = _column_order(table.rows, table.schema)
    arrays = []
    for name in names:
        try:
            arrays.append(_column_array(table.rows, name, table.schema))
        except UnicodeEncodeError:
            raise TableError(
                f"{path}: column {name!r} holds text that is not valid Unicode (a lone "
                "surrogate from a JSON \\u escape); Parquet cannot store it, write JSONL instead"
            ) from None
    return pa.table(dict(zip(names, arrays, strict=True)))


def _column_order(rows: list[dict[str, Any]], schema: pa.Schema | None) -> list[str]:
    seen: dict[str, None] = dict.fromkeys(schema.names) if schema is not None else {}
    for row in rows:
        for name in row:
            seen.setdefault(name, None)
    return list(seen)


def _column_array(rows: list[dict[str, Any]], name: str, schema: pa.Schema | None) -> pa.Array:
    values = [row.get(name) for row in rows]
    if schema is not None and schema.get_field_index(name) >= 0:
        field_type = schema.field(name).type
        try:
            return pa.array(values, type=field_type)
        except (pa.ArrowException, TypeError, ValueError):
            pass
    return _inferred_array(name, values)


def _inferred_array(name: str, values: list[Any]) -> pa.Array:
    try:
        return pa.array(values, from_pandas=True)
    except UnicodeEncodeError:
        raise
    except (pa.ArrowException, TypeError, ValueError):
        # Mixed kinds in one column (e.g. numbers and strings): keep every value as text.
        as_text = [None if value is None else _text(value) for value in values]
        return pa.array(as_text, type=pa.string())


def _text(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(strict_json(value), default=str)
