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
from saliency_assets.core.contract.overwrites import config_inputs, config_stores, reject_overwrites
from saliency_assets.core.contract.provenance import build_run_provenance, describe_path, utc_now
from saliency_assets.core.contract.reports import render_markdown
from saliency_assets.core.model.saliency_model import ModelChoice
from saliency_assets.core.run.batch import prepare_models, run_batch, summary_line
from saliency_assets.core.run.engine import prepare_model
from saliency_assets.core.run.table_run import (
    audit_record,
    describe_outputs,
    materialize_table,
    write_audit,
)
from saliency_assets.core.tables.table_files import (
    TableError,
    table_format,
    write_json_atomic,
    write_text_atomic,
)

ENTRYPOINT = "saliency_assets/cli.py"


def run_materialize(args: argparse.Namespace, argv: list[str]) -> int:
    started = utc_now()
    try:
        table_format(args.input)
        table_format(args.output)
        config = config_from_args(args)
        model = prepare_model(config)
        _reject_materialize_overwrites(args, config, model)
    except (ConfigError, TableError) as error:
        return _fail("saliency materialize", error, 2)
    try:
        run = materialize_table(args.input, args.output, config, model, log=sys.stderr)
    except (TableError, OSError) as error:
        return _fail("saliency materialize", error, 1)
    print(summary_line(run.summary), file=sys.stderr)
    if args.audit_json is not None:
        provenance = build_run_provenance(
            ENTRYPOINT,
            argv,
            args_record(args),
            inputs={
                "input": describe_path(args.input),
                "model_path": describe_path(model.path),
                "root": describe_path(config.root),
            },
            outputs={**describe_outputs(output=args.output), "audit_json": str(args.audit_json)},
            model=model,
            started_at=started,
        )
        try:
            write_audit(args.audit_json, audit_record(run, run_provenance=provenance))
        except OSError as error:
            return _fail("saliency materialize", f"audit JSON not written: {error}", 1)
    return 0 if run.summary["failed"] == 0 else 1


def _reject_materialize_overwrites(
    args: argparse.Namespace, config: MaterializeConfig, model: ModelChoice
) -> None:
    def flag(key: str) -> str:
        return "--" + key.replace("_", "-")

    inputs = [("--input", args.input), *config_inputs(config, model.path, flag)]
    outputs = [("--audit-json", args.audit_json), ("--output", args.output)]
    reject_overwrites(inputs, outputs, config_stores(config, flag))


def run_batch_command(args: argparse.Namespace, argv: list[str]) -> int:
    started = utc_now()
    try:
        manifest = load_manifest(args.manifest, args.base_dir)
        models = prepare_models(manifest)
        reject_manifest_overwrites(
            manifest,
            {table_id: model.path for table_id, model in models.items()},
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
    first_model = next(iter(models.values()), None) or prepare_model(MaterializeConfig())
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
    provenance["models"] = {
        table_id: {"id": m.model_id, "sha256": m.sha256} for table_id, m in models.items()
    }
    write_json_atomic(args.report_json, report.to_json(provenance))


def run_demo_command(args: argparse.Namespace, argv: list[str]) -> int:
    from saliency_assets.demo import run_demo

    return run_demo()


def config_from_args(args: argparse.Namespace) -> MaterializeConfig:
    values = {name: getattr(args, name) for name in CONFIG_FIELDS}
    config = MaterializeConfig(**values)
    validate_config(config, "command line")
    return config


def args_record(args: argparse.Namespace) -> dict[str, Any]:
    return {name: value for name, value in vars(args).items() if name != "command"}


def _fail(prefix: str, error: Exception | str, code: int, prefix_only: bool = False) -> int:
    separator = ": " if prefix_only else ": error: "
    print(f"{prefix}{separator}{error}", file=sys.stderr)
    return code
