"""``saliency-assets``: materialize | batch | demo. Argument parsing only; the core does the work.

``materialize`` and ``batch`` take every flag of the reference tools (same names, defaults and
meaning) plus the new settings. Exit codes: 0 all rows ok or skipped; 1 row failures or a
table that could not be read or written; 2 usage or configuration errors, before any work;
128 + N when stopped by signal N (130 SIGINT, 143 SIGTERM, 129 SIGHUP).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from saliency_assets.core.contract.config import (
    TEMPORAL_AGGREGATORS,
    MaterializeConfig,
    parse_inference_size,
)
from saliency_assets.core.decode.clips import RAW_PIX_FMTS, SAMPLING_MODES
from saliency_assets.core.decode.hdr import HDR_MODES
from saliency_assets.core.run.forkserver import start_forkserver
from saliency_assets.core.run.logstream import failure_proof_std_streams
from saliency_assets.interrupts import Interrupted, stop_signals_raise

PROG = "saliency-assets"
DEFAULTS = MaterializeConfig()
# Commands whose clips are computed in worker processes.
WORKER_COMMANDS = {"materialize", "batch"}


def main(argv: list[str] | None = None) -> int:
    # A reader that has gone away (``2>&1 | head -1``) must not change what the command does.
    with failure_proof_std_streams():
        try:
            with stop_signals_raise():
                return _run(list(sys.argv[1:] if argv is None else argv))
        except Interrupted as interrupted:
            return interrupted.report(PROG)


def _run(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    if args.command in WORKER_COMMANDS:
        # The workers' forkserver imports the clip code (about 0.5 s) on another core while
        # this process imports the commands' modules, instead of after them.
        start_forkserver()
    from saliency_assets import commands

    handlers = {
        "materialize": commands.run_materialize,
        "batch": commands.run_batch_command,
        "demo": commands.run_demo_command,
    }
    return handlers[args.command](args, argv)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.splitlines()[0])
    subparsers = parser.add_subparsers(dest="command", required=True)
    _add_materialize(subparsers)
    _add_batch(subparsers)
    _add_demo(subparsers)
    return parser


def _add_materialize(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "materialize",
        help="enrich one feature table",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        description="Append saliency_mean / saliency_var and status columns to one table.",
    )
    parser.add_argument("--input", type=Path, required=True, help=".jsonl or .parquet table")
    parser.add_argument("--output", type=Path, required=True, help=".jsonl or .parquet table")
    parser.add_argument("--audit-json", type=Path, default=None, help="optional audit JSON")
    _add_config_flags(parser)


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
    add(
        "--model-path",
        type=Path,
        action="append",
        default=None,
        help="ONNX model (default: the bundled model); repeat it to enrich the table with "
        "several models side by side, each in columns named <column>__<model id>",
    )
    add(
        "--model-id",
        action="append",
        default=None,
        help="model id for rows; without --model-path it selects <id>.onnx from the model path; "
        "with several models, one per --model-path (or none: each file's stem)",
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
    add("--jobs", type=int, default=None, help="cores to use (default: all of them)")
    add(
        "--providers",
        type=_providers,
        default=DEFAULTS.providers,
        help="comma-separated onnxruntime execution providers, or OpenVINO; CPU is the "
        "fallback (default: auto, OpenVINO where installed, else CPUExecutionProvider)",
    )
    add("--confine-to-root", action="store_true", help="reject clip paths outside --root")
    add(
        "--results-store",
        default=DEFAULTS.results_store,
        help="where clip results persist for reuse and resume: 'default' (the user cache, "
        "$SALIENCY_ASSETS_CACHE), 'none', a folder, or postgresql://user@host:port/db "
        "(shared by concurrent runs and machines)",
    )
    add("--error-column", default=DEFAULTS.error_column, help="'' disables it")
    add("--sampling-column", default=DEFAULTS.sampling_column, help="'' disables it")
    add("--inference-size-column", default=DEFAULTS.inference_size_column, help="'' disables it")
    add(
        "--hdr",
        choices=HDR_MODES,
        default=DEFAULTS.hdr,
        help="tonemap: PQ/HLG sources become the SDR picture (BT.2408/BT.2390); off: their code "
        "values are read as SDR, as the older tool did",
    )
    add("--transfer-column", default=DEFAULTS.transfer_column, help="'' disables it")
    add(
        "--ray-address",
        default=None,
        help="compute the clips on this Ray cluster (e.g. 10.0.0.5:6379, auto, ray://head:10001) "
        "instead of local worker processes; needs the [ray] extra",
    )


def _add_batch(subparsers: Any) -> None:
    parser = subparsers.add_parser(
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


def _add_demo(subparsers: Any) -> None:
    subparsers.add_parser(
        "demo", help="generate the demo corpus and materialise saliency/demo/* through Dagster"
    )


def _timeout(text: str) -> float | None:
    seconds = float(text)
    return None if seconds == 0 else seconds


def _providers(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


if __name__ == "__main__":
    sys.exit(main())
