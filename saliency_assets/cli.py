"""``saliency-assets``: materialize | batch | demo. Argument parsing only; the core does the work.

``materialize`` and ``batch`` take every flag of the reference tools (same names, defaults and
meaning) plus the new settings. Exit codes: 0 all rows ok or skipped; 1 row failures or a
table that could not be read or written; 2 usage or configuration errors, before any work.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from saliency_assets.core.batch import prepare_models, run_batch, summary_line
from saliency_assets.core.clips import RAW_PIX_FMTS, SAMPLING_MODES
from saliency_assets.core.config import (
    CONFIG_FIELDS,
    TEMPORAL_AGGREGATORS,
    MaterializeConfig,
    parse_inference_size,
    validate_config,
)
from saliency_assets.core.engine import prepare_model
from saliency_assets.core.errors import ConfigError
from saliency_assets.core.manifests import load_manifest
from saliency_assets.core.provenance import build_run_provenance, describe_path, utc_now
from saliency_assets.core.reports import render_markdown
from saliency_assets.core.table_run import (
    audit_record,
    describe_outputs,
    materialize_table,
    write_audit,
)
from saliency_assets.core.tables import (
    TableError,
    table_format,
    write_json_atomic,
    write_text_atomic,
)

ENTRYPOINT = "saliency_assets/cli.py"
DEFAULTS = MaterializeConfig()


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    return args.handler(args, argv)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="saliency-assets", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    _add_materialize(commands)
    _add_batch(commands)
    _add_demo(commands)
    return parser


def _add_materialize(commands: Any) -> None:
    parser = commands.add_parser(
        "materialize",
        help="enrich one feature table",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        description="Append saliency_mean / saliency_var and status columns to one table.",
    )
    parser.add_argument("--input", type=Path, required=True, help=".jsonl or .parquet table")
    parser.add_argument("--output", type=Path, required=True, help=".jsonl or .parquet table")
    parser.add_argument("--audit-json", type=Path, default=None, help="optional audit JSON")
    _add_config_flags(parser)
    parser.set_defaults(handler=_run_materialize)


def _add_config_flags(parser: argparse.ArgumentParser) -> None:
    add = parser.add_argument
    add("--path-column", default=DEFAULTS.path_column, help="row key holding the clip path")
    add("--width-column", default=DEFAULTS.width_column)
    add("--height-column", default=DEFAULTS.height_column)
    add("--root", type=Path, default=None, help="prefix for relative clip paths")
    add(
        "--ffmpeg-bin",
        default=None,
        help="decode through this ffmpeg binary over a pipe (default: in-process PyAV)",
    )
    add("--ffprobe-bin", default=None, help="probe with this ffprobe binary (default: PyAV)")
    add("--model-path", type=Path, default=None, help="ONNX model (default: the bundled model)")
    add(
        "--model-id",
        default=None,
        help="model id for rows; without --model-path it selects <id>.onnx from the model path",
    )
    add("--max-frames", type=int, default=DEFAULTS.max_frames)
    add("--frame-samples", type=int, default=DEFAULTS.frame_samples)
    add("--temporal-aggregator", choices=TEMPORAL_AGGREGATORS, default=DEFAULTS.temporal_aggregator)
    add("--ema-alpha", type=float, default=DEFAULTS.ema_alpha)
    add("--overwrite", action="store_true", help="recompute rows that already have saliency")
    add("--status-column", default=DEFAULTS.status_column, help="'' disables it")
    add("--model-id-column", default=DEFAULTS.model_id_column, help="'' disables it")
    add("--aggregator-column", default=DEFAULTS.aggregator_column, help="'' disables it")
    add("--ema-alpha-column", default=DEFAULTS.ema_alpha_column, help="'' disables it")
    add("--default-width", type=int, default=DEFAULTS.default_width, help="0 means none")
    add("--default-height", type=int, default=DEFAULTS.default_height, help="0 means none")
    _add_new_flags(parser)


def _add_new_flags(parser: argparse.ArgumentParser) -> None:
    add = parser.add_argument
    add(
        "--sampling",
        choices=SAMPLING_MODES,
        default=DEFAULTS.sampling,
        help="head: the first max-frames frames (reference); spread: evenly over the clip",
    )
    add(
        "--inference-size",
        type=parse_inference_size,
        default=None,
        metavar="{native,N}",
        help="native (reference) or the short side N the frames are scaled to",
    )
    add(
        "--default-pix-fmt",
        choices=RAW_PIX_FMTS,
        default=DEFAULTS.default_pix_fmt,
        help="pixel format of raw .yuv sources without a pix-fmt column value",
    )
    add("--pix-fmt-column", default=DEFAULTS.pix_fmt_column)
    add(
        "--decode-timeout",
        type=_timeout,
        default=DEFAULTS.decode_timeout,
        help="seconds allowed to decode one clip; 0 means no limit",
    )
    add("--jobs", type=int, default=None, help="worker processes (default: number of cores)")
    add(
        "--providers",
        type=_providers,
        default=DEFAULTS.providers,
        help="comma-separated onnxruntime execution providers; CPU is the fallback",
    )
    add("--confine-to-root", action="store_true", help="reject clip paths outside --root")
    add(
        "--results-store",
        default=DEFAULTS.results_store,
        help="where clip results persist for reuse and resume: 'default' (the user cache, "
        "$SALIENCY_ASSETS_CACHE), 'none', or a folder",
    )
    add("--error-column", default=DEFAULTS.error_column, help="'' disables it")
    add("--sampling-column", default=DEFAULTS.sampling_column, help="'' disables it")
    add("--inference-size-column", default=DEFAULTS.inference_size_column, help="'' disables it")


def _add_batch(commands: Any) -> None:
    parser = commands.add_parser(
        "batch",
        help="enrich every table of a manifest",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--manifest", type=Path, required=True)
    parser.add_argument(
        "--base-dir",
        type=Path,
        default=None,
        help="base for relative manifest paths (default: the manifest's folder)",
    )
    parser.add_argument("--report-json", type=Path, default=None)
    parser.add_argument("--report-md", type=Path, default=None)
    parser.add_argument("--allow-row-failures", action="store_true")
    parser.add_argument("--fail-fast", action="store_true")
    parser.set_defaults(handler=_run_batch)


def _add_demo(commands: Any) -> None:
    parser = commands.add_parser(
        "demo", help="generate the demo corpus and materialise saliency/demo/* through Dagster"
    )
    parser.set_defaults(handler=_run_demo)


def _run_materialize(args: argparse.Namespace, argv: list[str]) -> int:
    started = utc_now()
    try:
        table_format(args.input)
        table_format(args.output)
        if args.audit_json is not None and os.path.realpath(args.audit_json) == os.path.realpath(
            args.output
        ):
            raise ConfigError(f"--audit-json and --output are the same file {args.output}")
        config = _config_from_args(args)
        model = prepare_model(config)
    except (ConfigError, TableError) as error:
        return _fail("saliency materialize", error, 2)
    try:
        run = materialize_table(args.input, args.output, config, model)
    except (TableError, OSError) as error:
        return _fail("saliency materialize", error, 1)
    print(summary_line(run.summary), file=sys.stderr)
    if args.audit_json is not None:
        provenance = build_run_provenance(
            ENTRYPOINT,
            argv,
            _args_record(args),
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


def _run_batch(args: argparse.Namespace, argv: list[str]) -> int:
    started = utc_now()
    try:
        manifest = load_manifest(args.manifest, args.base_dir)
        models = prepare_models(manifest)
    except ConfigError as error:
        return _fail("saliency batch manifest error", error, 2, prefix_only=True)
    if not manifest.tables:
        print(
            f"saliency batch materialize: WARNING — manifest {args.manifest} has no tables; "
            "nothing to do",
            file=sys.stderr,
        )
    report = run_batch(manifest, models, args.allow_row_failures, args.fail_fast)
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
        _args_record(args),
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


def _run_demo(args: argparse.Namespace, argv: list[str]) -> int:
    from saliency_assets.demo import run_demo

    return run_demo()


def _config_from_args(args: argparse.Namespace) -> MaterializeConfig:
    values = {name: getattr(args, name) for name in CONFIG_FIELDS}
    config = MaterializeConfig(**values)
    validate_config(config, "command line")
    return config


def _args_record(args: argparse.Namespace) -> dict[str, Any]:
    return {name: value for name, value in vars(args).items() if name not in ("handler", "command")}


def _timeout(text: str) -> float | None:
    seconds = float(text)
    return None if seconds == 0 else seconds


def _providers(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


def _fail(prefix: str, error: Exception | str, code: int, prefix_only: bool = False) -> int:
    separator = ": " if prefix_only else ": error: "
    print(f"{prefix}{separator}{error}", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
