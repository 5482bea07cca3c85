"""Asset checks: the status contract, provenance and coverage, reported with materializations."""

from __future__ import annotations

from collections import Counter
from typing import Any

import dagster as dg
import pyarrow.parquet as pq

from saliency_assets.core.contract.provenance import (
    build_run_provenance,
    describe_models,
    describe_path,
    utc_now,
)
from saliency_assets.core.contract.signal_audit import MIN_FINITE_SHARE, ColumnSignal, audit_signal
from saliency_assets.core.contract.statuses import FAILURE_STATUSES
from saliency_assets.core.model.clip_saliency import ClipResult
from saliency_assets.core.run.table_run import TableRun, combined_summary
from saliency_assets.core.tables.table_files import TableError, read_table
from saliency_assets.defs.corpora import CorpusTable
from saliency_assets.defs.storage import TableStorage

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
    ]


def contract_result(
    failures: dict[str, str], allow_row_failures: bool, metadata: dict[str, Any]
) -> dg.AssetCheckResult:
    """Passed only when nothing failed. Failures the manifest allows fail with WARN severity
    (yellow, never blocking), so an allowed failure is visible instead of a green pass;
    ``failures`` maps failed clips (or rows) to their reasons."""
    shown = dict(sorted(failures.items())[:FAILED_CLIPS_SHOWN])
    return dg.AssetCheckResult(
        check_name=STATUS_CONTRACT,
        passed=not failures,
        severity=dg.AssetCheckSeverity.WARN if allow_row_failures else dg.AssetCheckSeverity.ERROR,
        description=_failure_description(failures, allow_row_failures),
        metadata={
            "allow_row_failures": allow_row_failures,
            "failed_clips": len(failures),
            "failed_clip_reasons": dg.MetadataValue.json(shown),
            **metadata,
        },
    )


def batch_status_result(
    results: dict[str, ClipResult], allow_row_failures: bool, metadata: dict[str, Any]
) -> dg.AssetCheckResult:
    """The batch's contract; ``results`` maps each clip's partition key to its result."""
    failures = {key: r.detail or r.status for key, r in results.items() if not r.ok}
    return contract_result(failures, allow_row_failures, metadata)


def status_contract_result(runs: list[TableRun], allow_row_failures: bool) -> dg.AssetCheckResult:
    """The table's contract over every model's rows (a failed row names its model when the
    table has several)."""
    failures = {}
    for run in runs:
        model = "" if len(runs) == 1 else f" [{run.model.model_id}]"
        failures.update({label + model: reason for label, reason in failed_rows(run).items()})
    summary = combined_summary(runs)
    return contract_result(
        failures, allow_row_failures, {**summary.to_json(), **_status_counts(summary.statuses)}
    )


def failed_rows(run: TableRun) -> dict[str, str]:
    """Each failed clip (its path, or the row number when it names none) and its reason."""
    config = run.config
    failures = {}
    for index, row in enumerate(run.outcome.rows):
        status = row.get(config.status_column)
        if status in FAILURE_STATUSES:
            name = row.get(config.path_column)
            label = name if isinstance(name, str) and name else f"row {index}"
            failures[label] = row.get(config.error_column) or status
    return failures


def _failure_description(failures: dict[str, str], allowed: bool) -> str:
    if not failures:
        return "No clip failed."
    names = ", ".join(sorted(failures)[:5]) + (" …" if len(failures) > 5 else "")
    allowance = " (allowed by the manifest)" if allowed else ""
    return f"{len(failures)} clip(s) failed{allowance}: {names}"


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


def coverage_check(
    table: CorpusTable, asset_key: dg.AssetKey, clip_keys: list[dg.AssetKey]
) -> dg.AssetChecksDefinition:
    """Every clip of the table has a materialized partition of every clip asset (one per
    model); runnable on its own."""
    sharded = table.options.partitioning == "shards"

    @dg.asset_check(
        asset=asset_key,
        name=COVERAGE,
        description="Every unique clip of the table has a materialized clip_saliency partition "
        "for every model (clips without one were computed by enriched_table itself, outside "
        "Dagster's view).",
    )
    def coverage(context) -> dg.AssetCheckResult:  # an AssetCheckExecutionContext
        index = TableStorage.for_table(table, context.instance).clip_index
        if not index.is_file():
            return dg.AssetCheckResult(
                passed=False,
                description=f"no clip index at {index}: materialize source_table first",
            )
        done = [context.instance.get_materialized_partitions(key) for key in clip_keys]
        column = "shard" if sharded else "partition_key"
        partitions = pq.read_table(index, columns=[column]).column(column).to_pylist()
        missing = [key for key in partitions if not all(key in each for each in done)]
        return dg.AssetCheckResult(
            passed=not missing,
            severity=dg.AssetCheckSeverity.WARN,
            metadata={
                "unique_clips": len(partitions),
                "with_partition": len(partitions) - len(missing),
                "missing_clips": len(missing),
                "missing_examples": dg.MetadataValue.json(
                    sorted(set(missing))[:FAILED_CLIPS_SHOWN]
                ),
            },
        )

    return coverage


def run_provenance_for(
    table: CorpusTable, runs: list[TableRun], context: dg.AssetExecutionContext
) -> dict[str, Any]:
    run, models = runs[0], [each.model for each in runs]
    # Several models: each one's effective config (they differ in the model and its columns).
    configs = (
        {"config": run.config.to_json()}
        if len(runs) == 1
        else {"configs": {each.model.model_id: each.config.to_json() for each in runs}}
    )
    return build_run_provenance(
        ENTRYPOINT,
        argv=[],
        args={
            "table_id": table.table_id,
            "manifest": str(table.manifest.path),
            "dagster_run_id": context.run.run_id,
            **configs,
        },
        inputs={
            "input": describe_path(run.input),
            **describe_models(models),
            "root": describe_path(run.config.root),
            "manifest": describe_path(table.manifest.path),
        },
        outputs={"output": describe_path(run.output)},
        model=run.model,
        started_at=utc_now(),
        all_models=models,
    )


def signal_check(table: CorpusTable, asset_key: dg.AssetKey) -> dg.AssetChecksDefinition:
    """The signal-mix audit of the enriched table's saliency columns: each is covered (finite
    share >= 80 % and spread > 0; WARN otherwise) and correlates with the manifest's
    ``target_column`` this much (Pearson, Spearman), read back from the written table."""
    target = table.spec.target_column
    columns = [
        column for model in table.spec.models for column in (model.values.mean, model.values.var)
    ]

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
        signals = audit_signal(rows, target, columns)
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
