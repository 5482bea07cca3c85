"""One table end to end: read, enrich, write the output table, then its audit JSON.

The CLI's ``materialize`` and ``batch`` and the Dagster ``enriched_table`` asset all call this,
so a table comes out the same whichever way it was run. A table enriched with several models
is read once and written once; each model enriches the rows in turn (its own columns, its own
clip results in the same store), then the audit records every model and how they agree.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from saliency_assets.core.contract.config import CONFIG_FIELDS, MaterializeConfig
from saliency_assets.core.contract.model_comparison import ModelPair, compare_models
from saliency_assets.core.contract.model_sets import TableModel
from saliency_assets.core.contract.provenance import describe_path
from saliency_assets.core.contract.statuses import OK, SKIPPED_EXISTING
from saliency_assets.core.model.saliency_model import ModelChoice
from saliency_assets.core.run.engine import (
    ClipRunner,
    MaterializeOutcome,
    MaterializeSummary,
    materialize_rows,
)
from saliency_assets.core.run.results_store import ClipResultStore, store_for
from saliency_assets.core.tables.rows import PLAIN_VALUES, ValueColumns
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
    values: ValueColumns = PLAIN_VALUES  # where this model's values went

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
    only = TableModel(model.model_id, config)
    return materialize_models(input_path, output_path, [(only, model)], runner, store, log)[0]


def materialize_models(
    input_path: Path,
    output_path: Path,
    models: Sequence[tuple[TableModel, ModelChoice]],
    runner: ClipRunner | None = None,
    store: ClipResultStore | None | str = "from-config",
    log: TextIO = sys.stderr,
) -> list[TableRun]:
    """Like :func:`materialize_table`, with each model of ``models`` in turn (its config and
    columns, its validated choice); one run per model, all holding the written rows. A
    ``runner`` (a test seam) computes every model's clips: give one only with one model."""
    if store == "from-config":
        store = store_for(models[0][0].config, log)
    table = _read_for_engine(input_path, [table_model for table_model, _ in models])
    rows, outcomes = table.rows, []
    for table_model, model in models:
        outcome = materialize_rows(
            _handed_over(rows),
            table_model.config,
            model,
            runner=runner,
            store=store,
            log=log,
            values=table_model.values,
        )
        rows = outcome.rows
        outcomes.append(outcome)
    write_table(output_path, Table(rows, table.schema, table.kept))
    runs = []
    for (table_model, model), outcome in zip(models, outcomes, strict=True):
        outcome.rows = rows  # earlier models' rows were handed on; all end in these
        runs.append(
            TableRun(
                Path(input_path),
                Path(output_path),
                table_model.config,
                model,
                outcome,
                table_model.values,
            )
        )
    return runs


def _read_for_engine(path: Path, models: Sequence[TableModel]) -> Table:
    """The table, its rows holding only the columns the engine reads or writes (the others stay
    columnar). Without the path column every column is kept in the rows: the engine's warning
    lists them all."""
    columns = set().union(*(engine_columns(model.config, model.values) for model in models))
    table = read_table(path, row_columns=columns)
    if table.kept is not None and models[0].config.path_column not in table.schema.names:
        return read_table(path)
    return table


def engine_columns(config: MaterializeConfig, values: ValueColumns = PLAIN_VALUES) -> set[str]:
    """Every column a row's enrichment may read or write: the configured ones (path, geometry,
    pixel format, status and metadata) and the saliency values."""
    named = {getattr(config, field) for field in CONFIG_FIELDS if field.endswith("_column")}
    return {name for name in named if name} | {values.mean, values.var}


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


def table_audit_record(
    runs: Sequence[TableRun], comparison: list[ModelPair] | None = None, **extra: Any
) -> dict[str, Any]:
    """The audit of a table run: :func:`audit_record` for one model; for several, the table's
    summary (:func:`combined_summary`), each model's own record and ``model_comparison``."""
    if len(runs) == 1:
        return audit_record(runs[0], **extra)
    first = runs[0]
    comparison = compare_runs(runs) if comparison is None else comparison
    return {
        "schema": AUDIT_SCHEMA,
        "input": str(first.input),
        "output": str(first.output),
        "summary": combined_summary(runs).to_json(),
        "models": [_model_record(run) for run in runs],
        "model_comparison": [pair.to_json(with_plot=True) for pair in comparison],
        **extra,
    }


def _model_record(run: TableRun) -> dict[str, Any]:
    record = audit_record(run)
    for key in ("schema", "input", "output"):  # said once, for the table
        record.pop(key)
    record["columns"] = {"saliency_mean": run.values.mean, "saliency_var": run.values.var}
    return record


def compare_runs(runs: Sequence[TableRun]) -> list[ModelPair]:
    """How each pair of the runs' models agree, clip by clip, on the written rows."""
    first = runs[0]
    models = [(run.model.model_id, run.values) for run in runs]
    return compare_models(first.outcome.rows, first.config.path_column, models)


def combined_summary(runs: Sequence[TableRun]) -> MaterializeSummary:
    """Row counters of a table enriched by every one of ``runs``: a row failed when any model
    failed it, was skipped when every model skipped it, and is ok otherwise."""
    if len(runs) == 1:
        return runs[0].outcome.summary
    summary = MaterializeSummary()
    for statuses in zip(*(run.outcome.row_statuses for run in runs), strict=True):
        failed = [status for status in statuses if status not in (OK, SKIPPED_EXISTING)]
        if failed:
            summary.count(failed[0])
        elif all(status == SKIPPED_EXISTING for status in statuses):
            summary.count(SKIPPED_EXISTING)
        else:
            summary.count(OK)
    return summary


def write_audit(path: Path, record: dict[str, Any]) -> None:
    write_json_atomic(path, record)


def describe_outputs(**paths: Path | None) -> dict[str, Any]:
    """Path descriptions of files already written (so hashes are of this run's files)."""
    return {name: describe_path(path) for name, path in paths.items()}
