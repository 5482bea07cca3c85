"""What each ``saliency-assets`` command does once its arguments are parsed.

:mod:`saliency_assets.cli` parses; these functions run the core, print the summary, write the
audit and reports with their provenance, and turn errors into the exit codes the CLI documents.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from saliency_assets.core.contract.config import CONFIG_FIELDS, MaterializeConfig, validate_config
from saliency_assets.core.contract.errors import ConfigError
from saliency_assets.core.contract.manifests import load_manifest, reject_manifest_overwrites
from saliency_assets.core.contract.model_sets import ModelRef, TableModel, table_models
from saliency_assets.core.contract.overwrites import config_inputs, config_stores, reject_overwrites
from saliency_assets.core.contract.provenance import (
    build_run_provenance,
    describe_models,
    describe_path,
    utc_now,
)
from saliency_assets.core.contract.reports import render_markdown
from saliency_assets.core.model.saliency_model import ModelChoice
from saliency_assets.core.run.batch import prepare_models, report_models, run_batch, summary_line
from saliency_assets.core.run.engine import prepare_model
from saliency_assets.core.run.table_run import (
    combined_summary,
    describe_outputs,
    materialize_models,
    table_audit_record,
    write_audit,
)
from saliency_assets.core.tables.table_files import (
    TableError,
    table_format,
    write_json_atomic,
    write_text_atomic,
)

ENTRYPOINT = "saliency_assets/cli.py"
MODEL_FLAGS = ("model_path", "model_id")  # repeatable: several models side by side


def run_materialize(args: argparse.Namespace, argv: list[str]) -> int:
    started = utc_now()
    try:
        table_format(args.input)
        table_format(args.output)
        config = config_from_args(args)
        chosen = [
            (table_model, prepare_model(table_model.config))
            for table_model in models_from_args(args, config)
        ]
        _reject_materialize_overwrites(args, config, [model for _, model in chosen])
    except (ConfigError, TableError) as error:
        return _fail("saliency materialize", error, 2)
    try:
        runs = materialize_models(args.input, args.output, chosen, log=sys.stderr)
    except (TableError, OSError) as error:
        return _fail("saliency materialize", error, 1)
    comparison = report_models(runs, sys.stderr)
    summary = combined_summary(runs).to_json()
    print(summary_line(summary), file=sys.stderr)
    if args.audit_json is not None:
        models = [model for _, model in chosen]
        provenance = build_run_provenance(
            ENTRYPOINT,
            argv,
            args_record(args),
            inputs={
                "input": describe_path(args.input),
                **describe_models(models),
                "root": describe_path(config.root),
            },
            outputs={**describe_outputs(output=args.output), "audit_json": str(args.audit_json)},
            model=models[0],
            started_at=started,
            all_models=models,
        )
        record = table_audit_record(runs, comparison, run_provenance=provenance)
        try:
            write_audit(args.audit_json, record)
        except OSError as error:
            return _fail("saliency materialize", f"audit JSON not written: {error}", 1)
    return 0 if summary["failed"] == 0 else 1


def models_from_args(args: argparse.Namespace, config: MaterializeConfig) -> tuple[TableModel, ...]:
    """The models a repeated --model-path (with one --model-id each, or none) names, or the
    config's single model."""
    paths, ids = args.model_path or [], args.model_id or []
    if len(paths) <= 1 and len(ids) <= 1:
        return table_models(config)
    if paths and ids and len(ids) != len(paths):
        raise ConfigError(
            f"--model-id is given {len(ids)} times for {len(paths)} --model-path: give one "
            "--model-id per --model-path, in the same order, or none (each model's id is then "
            "its file's stem)"
        )
    if paths:
        refs = [ModelRef(path, ids[index] if ids else None) for index, path in enumerate(paths)]
    else:
        refs = [ModelRef(None, model_id) for model_id in ids]
    return table_models(config, refs, "command line")


def _reject_materialize_overwrites(
    args: argparse.Namespace, config: MaterializeConfig, models: list[ModelChoice]
) -> None:
    def flag(key: str) -> str:
        return "--" + key.replace("_", "-")

    inputs = [("--input", args.input), *config_inputs(config, models[0].path, flag)]
    inputs += [("--model-path", model.path) for model in models[1:]]
    outputs = [("--audit-json", args.audit_json), ("--output", args.output)]
    reject_overwrites(inputs, outputs, config_stores(config, flag))


def run_batch_command(args: argparse.Namespace, argv: list[str]) -> int:
    started = utc_now()
    try:
        manifest = load_manifest(args.manifest, args.base_dir)
        models = prepare_models(manifest)
        reject_manifest_overwrites(
            manifest,
            {table_id: [model.path for model in chosen] for table_id, chosen in models.items()},
            [("--report-json", args.report_json), ("--report-md", args.report_md)],
        )
    except ConfigError as error:
        return _fail("saliency batch manifest error", error, 2, prefix_only=True)
    if not manifest.tables:
        print(
            f"saliency batch materialize: WARNING — manifest {args.manifest} has no tables; "
            "nothing to do",
            file=sys.stderr,
        )
    report = run_batch(manifest, models, args.allow_row_failures, args.fail_fast, log=sys.stderr)
    totals = report.summary()
    print(
        f"saliency batch materialize: tables={totals['tables']} total={totals['total']} "
        f"ok={totals['ok']} skipped={totals['skipped_existing']} failed={totals['failed']}",
        file=sys.stderr,
    )
    try:
        _write_batch_reports(args, argv, report, models, manifest, started)
    except OSError as error:
        return _fail("saliency batch materialize", f"report not written: {error}", 1)
    return report.exit_code


def _write_batch_reports(args, argv, report, models, manifest, started) -> None:
    if args.report_md is not None:
        write_text_atomic(args.report_md, render_markdown(report))
    if args.report_json is None:
        return
    first_model = next(iter(models.values()), [None])[0] or prepare_model(MaterializeConfig())
    provenance = build_run_provenance(
        ENTRYPOINT,
        argv,
        args_record(args),
        inputs={"manifest": describe_path(manifest.path)},
        # Described after writing; the JSON report cannot hash itself, so it is named only.
        outputs={"report_md": describe_path(args.report_md), "report_json": str(args.report_json)},
        model=first_model,
        started_at=started,
    )
    # One model: {id, sha256}, as ever; several: a list of them.
    provenance["models"] = {
        table_id: _model_ids(chosen) if len(chosen) > 1 else _model_ids(chosen)[0]
        for table_id, chosen in models.items()
    }
    write_json_atomic(args.report_json, report.to_json(provenance))


def run_demo_command(args: argparse.Namespace, argv: list[str]) -> int:
    from saliency_assets.demo import run_demo

    return run_demo()


def _model_ids(models: list[ModelChoice]) -> list[dict[str, str]]:
    return [{"id": model.model_id, "sha256": model.sha256} for model in models]


def config_from_args(args: argparse.Namespace) -> MaterializeConfig:
    """The command line's config; with several models, their settings without a model (each
    model's own config comes from :func:`models_from_args`)."""
    values = {name: getattr(args, name) for name in CONFIG_FIELDS}
    for name in MODEL_FLAGS:
        given = values[name] or []
        values[name] = given[0] if len(given) == 1 else None
    config = MaterializeConfig(**values)
    validate_config(config, "command line")
    return config


def args_record(args: argparse.Namespace) -> dict[str, Any]:
    """The arguments as given; a model flag given once is recorded as a value, as ever."""
    record = {name: value for name, value in vars(args).items() if name != "command"}
    for name in MODEL_FLAGS:
        if isinstance(record.get(name), list) and len(record[name]) == 1:
            record[name] = record[name][0]
    return record


def _fail(prefix: str, error: Exception | str, code: int, prefix_only: bool = False) -> int:
    separator = ": " if prefix_only else ": error: "
    print(f"{prefix}{separator}{error}", file=sys.stderr)
    return code
