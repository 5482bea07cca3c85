"""Run every table of a manifest, in order, and build the batch report.

Models and binaries of every table are checked before the first table runs. A table that
cannot be read or written becomes an ``error`` entry with its message; the others still run
unless ``fail_fast`` is set. A table with several models logs each model's counters and how
each pair of models agrees.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any, TextIO

from saliency_assets.core.contract.manifests import Manifest, TableSpec
from saliency_assets.core.contract.reports import (
    TABLE_ERROR,
    TABLE_OK,
    TABLE_ROW_FAILURES,
    BatchReport,
    TableReport,
)
from saliency_assets.core.model.saliency_model import ModelChoice
from saliency_assets.core.run.engine import prepare_model
from saliency_assets.core.run.table_run import (
    TableRun,
    combined_summary,
    compare_runs,
    materialize_models,
    table_audit_record,
    write_audit,
)

AuditExtras = Callable[[TableSpec, list[TableRun]], dict[str, Any]]


def prepare_models(manifest: Manifest) -> dict[str, list[ModelChoice]]:
    """Each table's models, validated up front (ConfigError stops the batch before any work)."""
    return {
        table.table_id: [prepare_model(model.config) for model in table.models]
        for table in manifest.tables
    }


def run_batch(
    manifest: Manifest,
    models: dict[str, list[ModelChoice]],
    allow_row_failures: bool = False,
    fail_fast: bool = False,
    audit_extras: AuditExtras | None = None,
    log: TextIO = sys.stderr,
) -> BatchReport:
    report = BatchReport(str(manifest.path), allow_row_failures)
    for table in manifest.tables:
        entry = _run_table(manifest, table, models[table.table_id], audit_extras, log)
        report.tables.append(entry)
        if fail_fast and entry.status != TABLE_OK:
            break
    return report


def _run_table(
    manifest: Manifest,
    table: TableSpec,
    models: list[ModelChoice],
    audit_extras: AuditExtras | None,
    log: TextIO,
) -> TableReport:
    try:
        chosen = list(zip(table.models, models, strict=True))
        runs = materialize_models(table.input, table.output, chosen, log=log)
        comparison = report_models(runs, log)
        if table.audit_json is not None:
            extras = audit_extras(table, runs) if audit_extras else {}
            record = table_audit_record(
                runs,
                comparison,
                batch_manifest=str(manifest.path),
                table_id=table.table_id,
                **extras,
            )
            write_audit(table.audit_json, record)
    except Exception as error:  # any table-level failure is reported, and the batch goes on
        print(f"saliency batch materialize: table {table.table_id!r} error: {error}", file=log)
        return TableReport(table, TABLE_ERROR, error=str(error))
    summary = combined_summary(runs).to_json()
    print(summary_line(summary), file=log)
    status = TABLE_OK if summary["failed"] == 0 else TABLE_ROW_FAILURES
    return TableReport(table, status, summary=summary)


def report_models(runs: list[TableRun], log: TextIO) -> list:
    """With several models: each one's counters, then how each pair agrees (also returned, for
    the audit). Nothing with one model."""
    if len(runs) == 1:
        return []
    for run in runs:
        print(summary_line(run.summary, f"model {run.model.model_id}: "), file=log)
    comparison = compare_runs(runs)
    for pair in comparison:
        print(f"saliency materialize: {pair.summary_line()}", file=log)
    return comparison


def summary_line(summary: dict[str, int], label: str = "") -> str:
    """The reference's closing line for one table (``label`` names a model of several)."""
    return (
        f"saliency materialize: {label}total={summary['total']} ok={summary['ok']} "
        f"skipped={summary['skipped_existing']} failed={summary['failed']}"
    )
