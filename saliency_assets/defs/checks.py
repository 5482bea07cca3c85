"""Asset checks: the status contract, provenance and coverage, reported with materializations."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

import dagster as dg

from saliency_assets.core.config import MaterializeConfig
from saliency_assets.core.engine import unique_clips
from saliency_assets.core.model import ModelChoice
from saliency_assets.core.provenance import build_run_provenance, describe_path, utc_now
from saliency_assets.core.results_store import ClipResultStore, result_keys
from saliency_assets.core.signal_audit import MIN_FINITE_SHARE, ColumnSignal, audit_signal
from saliency_assets.core.statuses import FAILURE_STATUSES
from saliency_assets.core.table_run import TableRun
from saliency_assets.core.tables import TableError, read_table
from saliency_assets.defs.corpora import CorpusTable

STATUS_CONTRACT = "status_contract"
PROVENANCE = "provenance"
COVERAGE = "coverage"
SIGNAL = "signal"
ENTRYPOINT = "saliency_assets/defs/factory.py"


FAILED_CLIPS_SHOWN = 20


def batch_status_spec(asset_key: dg.AssetKey) -> dg.AssetCheckSpec:
    # Not blocking: a clip that fails is a computed result (its status is the value), and the
    # batch's partitions are recorded either way; the enriched table's contract is the gate.
    return dg.AssetCheckSpec(
        STATUS_CONTRACT,
        asset=asset_key,
        description="No clip in the batch failed, unless the table allows row failures.",
    )


def table_check_specs(asset_key: dg.AssetKey) -> list[dg.AssetCheckSpec]:
    return [
        dg.AssetCheckSpec(
            STATUS_CONTRACT,
            asset=asset_key,
            blocking=True,
            description="No row failed, unless the table allows row failures.",
        ),
        dg.AssetCheckSpec(
            PROVENANCE,
            asset=asset_key,
            description="run_provenance: input and model sha256, versions, config.",
        ),
        dg.AssetCheckSpec(
            COVERAGE,
            asset=asset_key,
            description="Every unique clip had a result from clip_saliency.",
        ),
    ]


def batch_status_result(
    statuses: Counter, failures: dict[str, str], allow_row_failures: bool
) -> dg.AssetCheckResult:
    """The batch's status counts; ``failures`` maps failed partition keys to their reasons."""
    failed = sum(statuses[status] for status in FAILURE_STATUSES)
    shown = dict(sorted(failures.items())[:FAILED_CLIPS_SHOWN])
    return dg.AssetCheckResult(
        check_name=STATUS_CONTRACT,
        passed=failed == 0 or allow_row_failures,
        severity=dg.AssetCheckSeverity.ERROR,
        metadata={
            "failed_clips": failed,
            "failed_clip_reasons": dg.MetadataValue.json(shown),
            **_status_counts(statuses),
        },
    )


def status_contract_result(run: TableRun, allow_row_failures: bool) -> dg.AssetCheckResult:
    summary = run.outcome.summary
    return dg.AssetCheckResult(
        check_name=STATUS_CONTRACT,
        passed=summary.failed == 0 or allow_row_failures,
        severity=dg.AssetCheckSeverity.ERROR,
        metadata={
            "allow_row_failures": allow_row_failures,
            **summary.to_json(),
            **_status_counts(summary.statuses),
        },
    )


def provenance_result(provenance: dict[str, Any]) -> dg.AssetCheckResult:
    input_description = provenance["inputs"].get("input") or {}
    return dg.AssetCheckResult(
        check_name=PROVENANCE,
        passed=bool(input_description.get("sha256")) and bool(provenance["model"]["sha256"]),
        metadata={
            "input_sha256": input_description.get("sha256", ""),
            "model_sha256": provenance["model"]["sha256"],
            "run_provenance": dg.MetadataValue.json(provenance),
        },
    )


@dataclass(frozen=True)
class Coverage:
    clips: int
    with_results: int

    @property
    def missing(self) -> int:
        return self.clips - self.with_results


def coverage_of(
    rows: list[dict[str, Any]],
    config: MaterializeConfig,
    model: ModelChoice,
    store: ClipResultStore,
) -> Coverage:
    """How many of the table's unique clips already have a stored result for this model/config."""
    clips = unique_clips(rows, config)
    keys = result_keys(clips, config, model.sha256)
    return Coverage(len(clips), len(store.lookup_many(keys.values())))


def coverage_result(coverage: Coverage) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(
        check_name=COVERAGE,
        passed=coverage.missing == 0,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={
            "unique_clips": coverage.clips,
            "with_results": coverage.with_results,
            "computed_by_enriched_table": coverage.missing,
        },
    )


def run_provenance_for(
    table: CorpusTable, run: TableRun, context: dg.AssetExecutionContext
) -> dict[str, Any]:
    config = run.config
    return build_run_provenance(
        ENTRYPOINT,
        argv=[],
        args={
            "table_id": table.table_id,
            "manifest": str(table.manifest.path),
            "dagster_run_id": context.run.run_id,
            "config": config.to_json(),
        },
        inputs={
            "input": describe_path(run.input),
            "model_path": describe_path(run.model.path),
            "root": describe_path(config.root),
            "manifest": describe_path(table.manifest.path),
        },
        outputs={"output": describe_path(run.output)},
        model=run.model,
        started_at=utc_now(),
    )


def signal_check(table: CorpusTable, asset_key: dg.AssetKey) -> dg.AssetChecksDefinition:
    """The signal-mix audit of the enriched table's saliency columns: each is covered (finite
    share >= 80 % and spread > 0; WARN otherwise) and correlates with the manifest's
    ``target_column`` this much (Pearson, Spearman), read back from the written table."""
    target = table.spec.target_column

    @dg.asset_check(
        asset=asset_key,
        name=SIGNAL,
        description=f"Saliency columns: finite share >= {MIN_FINITE_SHARE:.0%}, spread > 0, "
        f"correlation with {target or 'the target column (none named in the manifest)'}.",
    )
    def signal() -> dg.AssetCheckResult:
        try:
            rows = read_table(table.spec.output).rows
        except TableError as error:
            return dg.AssetCheckResult(
                passed=False, severity=dg.AssetCheckSeverity.WARN, description=str(error)
            )
        signals = audit_signal(rows, target)
        unpaired = target is not None and not any(column.pairs for column in signals)
        return dg.AssetCheckResult(
            passed=all(column.covered for column in signals),
            severity=dg.AssetCheckSeverity.WARN,
            description=f"no row has a finite {target!r} beside the saliency" if unpaired else None,
            metadata={"target_column": target or "", **_signal_metadata(signals)},
        )

    return signal


def _signal_metadata(signals: list[ColumnSignal]) -> dict[str, Any]:
    metadata: dict[str, Any] = {}
    for column in signals:
        numbers = {"finite_share": column.finite_share, "std": column.std}
        numbers.update(pearson=column.pearson, spearman=column.spearman)
        for name, value in numbers.items():
            if value is not None:
                metadata[f"{column.column}/{name}"] = dg.MetadataValue.float(value)
        metadata[f"{column.column}/covered"] = column.covered
        metadata[f"{column.column}/pairs_with_target"] = column.pairs
    return metadata


def _status_counts(statuses: Counter) -> dict[str, int]:
    return {f"status/{status}": count for status, count in sorted(statuses.items())}
