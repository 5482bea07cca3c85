"""Batch reports: ``saliency-materializer-batch-v1`` JSON and the Markdown table.

Status rules fix the reference's masking: a batch with an errored table is ``failed`` (exit 1)
even with ``allow_row_failures``; row failures alone give ``row-failures``, which exits 0 only
when allowed. An empty batch is ``ok``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from saliency_assets.core.contract.manifests import TableSpec

BATCH_SCHEMA = "saliency-materializer-batch-v1"
TABLE_OK = "ok"
TABLE_ROW_FAILURES = "row-failures"
TABLE_ERROR = "error"
BATCH_FAILED = "failed"
COUNTERS = ("total", "ok", "skipped_existing", "failed")


@dataclass
class TableReport:
    spec: TableSpec
    status: str
    summary: dict[str, int] | None = None
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        entry: dict[str, Any] = {
            "id": self.spec.table_id,
            "input": str(self.spec.input),
            "output": str(self.spec.output),
            "audit_json": None if self.spec.audit_json is None else str(self.spec.audit_json),
            "config": self.spec.config.to_json(),
            "status": self.status,
        }
        if len(self.spec.models) > 1:  # the config holds their shared settings
            entry["models"] = [model.model_id for model in self.spec.models]
        if self.summary is not None:
            entry["summary"] = self.summary
        if self.error is not None:
            entry["error"] = self.error
        return entry


@dataclass
class BatchReport:
    manifest: str
    allow_row_failures: bool
    tables: list[TableReport] = field(default_factory=list)

    @property
    def failed_tables(self) -> int:
        return sum(1 for table in self.tables if table.status != TABLE_OK)

    @property
    def status(self) -> str:
        if self.failed_tables == 0:
            return TABLE_OK
        errored = any(table.status == TABLE_ERROR for table in self.tables)
        if not errored and self.allow_row_failures:
            return TABLE_ROW_FAILURES
        return BATCH_FAILED

    @property
    def exit_code(self) -> int:
        return 0 if self.status in (TABLE_OK, TABLE_ROW_FAILURES) else 1

    def summary(self) -> dict[str, int]:
        totals = dict.fromkeys(COUNTERS, 0)
        for table in self.tables:
            for name in COUNTERS:
                totals[name] += (table.summary or {}).get(name, 0)
        return {"tables": len(self.tables), "failed_tables": self.failed_tables, **totals}

    def to_json(self, run_provenance: dict[str, Any]) -> dict[str, Any]:
        return {
            "schema": BATCH_SCHEMA,
            "status": self.status,
            "manifest": self.manifest,
            "summary": self.summary(),
            "tables": [table.to_json() for table in self.tables],
            "run_provenance": run_provenance,
        }


def render_markdown(report: BatchReport) -> str:
    """The reference's Markdown layout, line for line, with a trailing newline."""
    lines = [
        "# Saliency Materializer Batch Report",
        "",
        f"Status: **{report.status}**",
        "",
        "| Table | Status | Total | OK | Skipped | Failed | Output |",
        "| --- | --- | ---: | ---: | ---: | ---: | --- |",
    ]
    lines.extend(_markdown_row(table) for table in report.tables)
    return "\n".join(lines) + "\n"


def _markdown_row(table: TableReport) -> str:
    if table.summary is None:
        counters = ["-"] * 4
    else:
        counters = [str(table.summary[name]) for name in COUNTERS]
    cells = [table.spec.table_id, table.status, *counters, f"`{Path(table.spec.output)}`"]
    return "| " + " | ".join(cells) + " |"
