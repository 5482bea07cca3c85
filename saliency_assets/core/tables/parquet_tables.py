"""Parquet tables: a table's rows read from Arrow and written back with the input's own column
types. Imported only for a Parquet table, so a JSONL run never loads pyarrow (~26 MB).

The footer is checked (duplicated column names, the memory budget of :mod:`.table_files`)
before any row is read; columns a run does not need stay columnar in ``Table.kept``.
"""

from __future__ import annotations

import json
from collections.abc import Collection
from pathlib import Path
from typing import Any, BinaryIO

import pyarrow as pa
import pyarrow.parquet as pq

from saliency_assets.core.tables import filesystems
from saliency_assets.core.tables.atomic import atomic_write
from saliency_assets.core.tables.table_files import MemoryBudget, Table, TableError, strict_json


def read_parquet(path: Path, row_columns: Collection[str] | None) -> Table:
    try:
        if filesystems.is_object(path):
            with filesystems.open_input(path) as handle:
                arrow_table = _read_checked_parquet(path, handle)
        else:
            arrow_table = _read_checked_parquet(path, path)
        names = arrow_table.column_names
        in_rows = names if row_columns is None else [name for name in names if name in row_columns]
        kept = None if row_columns is None else arrow_table.drop_columns(in_rows)
        rows = _rows_of(arrow_table.select(in_rows), arrow_table.num_rows)
        table = Table(rows, arrow_table.schema, kept)
        del arrow_table
        # Arrow's allocator keeps freed buffers; the rows now hold everything for the whole run.
        pa.default_memory_pool().release_unused()
        return table
    except (pa.ArrowException, OSError) as error:
        cause = " ".join(str(error).split())
        raise TableError(f"{path}: cannot read Parquet ({cause})") from None
    except MemoryError:
        raise TableError(f"{path}: the table does not fit in memory") from None


def _read_checked_parquet(path: Path, source: Path | BinaryIO) -> pa.Table:
    """``source``'s table once its footer passed the checks (local files read by pyarrow)."""
    _check_parquet_footer(path, pq.read_metadata(source))
    return pq.read_table(source)


def _rows_of(arrow_table: pa.Table, num_rows: int) -> list[dict[str, Any]]:
    """``arrow_table.to_pylist()``, with each text column's equal values sharing one string
    object: a per-frame table repeats its clip path on every row of the clip."""
    # Nulls stay None (not NaN as pandas would give) so an untouched column round-trips.
    columns = [_column_values(column) for column in arrow_table.columns]
    if not columns:
        return [{} for _ in range(num_rows)]
    names = arrow_table.column_names
    return [dict(zip(names, values, strict=True)) for values in zip(*columns, strict=True)]


def _column_values(column: pa.ChunkedArray) -> list[Any]:
    values = column.to_pylist()
    if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
        shared: dict[str, str] = {}
        values = [shared.setdefault(value, value) for value in values]
    return values


def _check_parquet_footer(path: Path, metadata: pq.FileMetaData) -> None:
    names = metadata.schema.to_arrow_schema().names
    duplicated = sorted({name for name in names if names.count(name) > 1})
    if duplicated:
        raise TableError(f"{path}: duplicated column names {duplicated}")
    MemoryBudget(path).take(metadata.num_rows, metadata.num_rows * len(names))


def write_parquet(path: Path, table: Table) -> None:
    arrow_table = _to_arrow(path, table)
    atomic_write(path, lambda handle: pq.write_table(arrow_table, handle))


def _to_arrow(path: Path, table: Table) -> pa.Table:
    """Columns in first-seen order; columns of the input schema keep their Arrow types (and
    are kept even when the table has no rows)."""
    names = _column_order(table.rows, table.schema)
    kept = table.kept.column_names if table.kept is not None else []
    in_rows = set().union(*table.rows) if kept else set()
    arrays = []
    for name in names:
        try:
            if name in kept and name not in in_rows:
                arrays.append(table.kept.column(name))
            else:
                arrays.append(_typed_array(name, _column_values_of(table, name), table.schema))
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


def _column_values_of(table: Table, name: str) -> list[Any]:
    """A column's values from the rows, or, for a kept column a row also holds (the engine
    wrote it), the row's value where it has one and the kept value elsewhere."""
    if table.kept is None or name not in table.kept.column_names:
        return [row.get(name) for row in table.rows]
    kept_values = table.kept.column(name).to_pylist()
    return [row.get(name, kept) for row, kept in zip(table.rows, kept_values, strict=True)]


def _typed_array(name: str, values: list[Any], schema: pa.Schema | None) -> pa.Array:
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
