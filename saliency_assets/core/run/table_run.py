"""One table end to end: read, enrich, write the output table, then its audit JSON.

The CLI's ``materialize`` and ``batch`` and the Dagster ``enriched_table`` asset all call this,
so a table comes out the same whichever way it was run.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from saliency_assets.core.contract.config import CONFIG_FIELDS, MaterializeConfig
from saliency_assets.core.contract.provenance import describe_path
from saliency_assets.core.model.saliency_model import ModelChoice
from saliency_assets.core.run.engine import ClipRunner, MaterializeOutcome, materialize_rows
from saliency_assets.core.run.results_store import ClipResultStore, store_for
from saliency_assets.core.tables.rows import MEAN_COLUMN, VAR_COLUMN
from saliency_assets.core.tables.table_files import (
    Table,
    read_table,
    write_json_atomic,
    write_table,
)

AUDIT_SCHEMA = "saliency-materializer-audit-v1"


@dataclass
class TableRun:
    input: Path
    output: Path
    config: MaterializeConfig
    model: ModelChoice
    outcome: MaterializeOutcome

    @property
    def summary(self) -> dict[str, int]:
        return self.outcome.summary.to_json()


def materialize_table(
    input_path: Path,
    output_path: Path,
    config: MaterializeConfig,
    model: ModelChoice,
    runner: ClipRunner | None = None,
    store: ClipResultStore | None | str = "from-config",
    log: TextIO = sys.stderr,
) -> TableRun:
    """Read ``input_path``, enrich it and write ``output_path`` atomically.

    ``store`` defaults to the one the config names (``results_store``).
    """
    if store == "from-config":
        store = store_for(config, log)
    table = _read_for_engine(input_path, config)
    rows = _handed_over(table.rows)
    outcome = materialize_rows(rows, config, model, runner=runner, store=store, log=log)
    write_table(output_path, Table(outcome.rows, table.schema, table.kept))
    return TableRun(Path(input_path), Path(output_path), config, model, outcome)


def _read_for_engine(path: Path, config: MaterializeConfig) -> Table:
    """The table, its rows holding only the columns the engine reads or writes (the others stay
    columnar). Without the path column every column is kept in the rows: the engine's warning
    lists them all."""
    table = read_table(path, row_columns=engine_columns(config))
    if table.kept is not None and config.path_column not in table.schema.names:
        return read_table(path)
    return table


def engine_columns(config: MaterializeConfig) -> set[str]:
    """Every column a row's enrichment may read or write: the configured ones (path, geometry,
    pixel format, status and metadata) and the saliency values."""
    named = {getattr(config, field) for field in CONFIG_FIELDS if field.endswith("_column")}
    return {name for name in named if name} | {MEAN_COLUMN, VAR_COLUMN}


def _handed_over(rows: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """Each row, dropped from ``rows`` as it is handed over: the engine enriches copies, and
    the originals would otherwise stay alive beside them, doubling the table's memory."""
    for index, row in enumerate(rows):
        rows[index] = None
        yield row


def audit_record(run: TableRun, **extra: Any) -> dict[str, Any]:
    """The audit JSON body shared by single-table and batch audits."""
    return {
        "schema": AUDIT_SCHEMA,
        "config": run.config.to_json(),
        "input": str(run.input),
        "output": str(run.output),
        "summary": run.summary,
        "statuses": dict(sorted(run.outcome.summary.statuses.items())),
        "clips": run.outcome.clips,
        "reused_clips": run.outcome.reused_clips,
        "unstored_clips": run.outcome.unstored_clips,
        # How HDR sources were read, and how many clips of each transfer went into the table.
        "hdr": {"mode": run.config.hdr, "clips_by_transfer": run.outcome.clips_by_transfer},
        "model": {
            "id": run.model.model_id,
            "path": str(run.model.path),
            "sha256": run.model.sha256,
        },
        **extra,
    }


def write_audit(path: Path, record: dict[str, Any]) -> None:
    write_json_atomic(path, record)


def describe_outputs(**paths: Path | None) -> dict[str, Any]:
    """Path descriptions of files already written (so hashes are of this run's files)."""
    return {name: describe_path(path) for name, path in paths.items()}
