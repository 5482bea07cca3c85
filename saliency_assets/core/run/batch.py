"""Run every table of a manifest, in order, and build the batch report.

Models and binaries of every table are checked before the first table runs. A table that
cannot be read or written becomes an ``error`` entry with its message; the others still run
unless ``fail_fast`` is set.
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
    audit_record,
    materialize_table,
    write_audit,
)

AuditExtras = Callable[[TableSpec, TableRun], dict[str, Any]]


def prepare_models(manifest: Manifest) -> dict[str, ModelChoice]:
    """Each table's model, validated up front (ConfigError stops the batch before any work)."""
    return {table.table_id: prepare_model(table.config) for table in manifest.tables}


def run_batch(
    manifest: Manifest,
    models: dict[str, ModelChoice],
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
    model: ModelChoice,
    audit_extras: AuditExtras | None,
    log: TextIO,
) -> TableReport:
    try:
        run = materialize_table(table.input, table.output, table.config, model, log=log)
        if table.audit_json is not None:
            extras = audit_extras(table, run) if audit_extras else {}
            write_audit(
                table.audit_json,
                audit_record(
                    run, batch_manifest=str(manifest.path), table_id=table.table_id, **extras
                ),
            )
    except Exception as error:  # any table-level failure is reported, and the batch goes on
        print(f"saliency batch materialize: table {table.table_id!r} error: {error}", file=log)
        return TableReport(table, TABLE_ERROR, error=str(error))
    summary = run.summary
    print(summary_line(summary), file=log)
    status = TABLE_OK if summary["failed"] == 0 else TABLE_ROW_FAILURES
    return TableReport(table, status, summary=summary)


def summary_line(summary: dict[str, int]) -> str:
    """The reference's closing line for one table."""
    return (
        f"saliency materialize: total={summary['total']} ok={summary['ok']} "
        f"skipped={summary['skipped_existing']} failed={summary['failed']}"
    )
