"""Inference engines and threads side by side: onnxruntime's CPU provider against OpenVINO.

Per variant, one fresh process builds the product's ``SaliencyModel`` (the same engine settings
as a worker), runs one warm-up call and times ``--calls`` calls on one seeded frame-sized
tensor. Variants:

- ``ENGINE/1`` and ``ENGINE/2``: one process alone with 1 or 2 threads (the tail of a run,
  where a worker takes the idle core: is the second thread worth it?);
- ``ENGINE/1x2``: two single-thread processes side by side (every worker busy; with pinning
  on, OpenVINO's two processes would share one core and this would be twice ``ENGINE/1``);
- ``ENGINE/s2``: one process with two single-thread streams, two calls at a time from two
  threads (how a worker spreads a clip's frames). Like ``1x2``, its seconds a call are per
  stream: two frames go through in that time.

Rounds rotate the variants' order; ``/proc/loadavg`` is recorded before each. Per variant the
median seconds a call, the speed relative to ``CPUExecutionProvider/1`` in the same round
(paired), peak RSS, and the largest |difference| of its map and of the map's mean from
onnxruntime's single-thread map. Writes ``benchmarks/results/engines-<time>.json``.

    python benchmarks/engines.py                            # saliency_student_v1, 1920x1088
    python benchmarks/engines.py --geometry 960x544 --model saliency_student_v2 --rounds 5
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import PYTHON, loadavg, print_table, shared_model, write_json  # noqa: E402

REFERENCE = "CPUExecutionProvider/1"  # the speeds' reference, else the first variant


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.one:
        return measure_one(args)
    model = Path(args.model) if args.model.endswith(".onnx") else shared_model(args.model)
    variants = [f"{engine}/{kind}" for engine in args.engines.split(",") for kind in args.kinds]
    work = Path(tempfile.mkdtemp(prefix="engines-"))
    rounds = []
    for number in range(args.rounds):
        order = variants[number % len(variants) :] + variants[: number % len(variants)]
        done = {"order": order, "loadavg": {}, "results": {}}
        for variant in order:
            done["loadavg"][variant] = loadavg()
            done["results"][variant] = run_variant(variant, model, args, work)
        rounds.append(done)
        print(f"round {number + 1}: load {done['loadavg']}", flush=True)
    summary = summarise(variants, rounds, work)
    report(summary, args)
    print(f"wrote {write_json('engines', {'args': vars(args), 'rounds': rounds, **summary})}")
    return 0


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="saliency_student_v1", help="name or .onnx path")
    parser.add_argument("--geometry", default="1920x1088", help="padded WIDTHxHEIGHT")
    parser.add_argument("--calls", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--engines", default="CPUExecutionProvider,OpenVINO")
    parser.add_argument("--kinds", default="1,2,1x2,s2", type=lambda text: text.split(","))
    parser.add_argument("--one", nargs=3, metavar=("ENGINE", "KIND", "MAP"), help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def run_variant(variant: str, model: Path, args, work: Path) -> dict:
    engine, kind = variant.split("/")
    processes, alone = (2, "1") if kind == "1x2" else (1, kind)
    commands = [
        [PYTHON, __file__, "--model", str(model), "--geometry", args.geometry, "--calls",
         str(args.calls), "--one", engine, alone, str(work / f"{engine}-{kind}-{index}.npy")]
        for index in range(processes)
    ]  # fmt: skip
    with ThreadPoolExecutor(processes) as pool:
        outcomes = list(pool.map(_run, commands))
    return {
        "seconds_per_call": max(o["seconds_per_call"] for o in outcomes),
        "peak_rss_mb": sum(o["peak_rss_mb"] for o in outcomes),
        "map": outcomes[0]["map"],
        "backend": outcomes[0]["backend"],
    }


def _run(command: list[str]) -> dict:
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"engines.py: a variant failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def measure_one(args) -> int:
    """In the child: build the model, warm up, time the calls, save the map. ``KIND`` ``s2``:
    two streams, ``--calls`` calls on each at once (seconds a call per stream)."""
    import numpy as np

    from saliency_assets.core.model.saliency_model import SaliencyModel

    engine, kind, map_path = args.one
    streams, threads = (2, 1) if kind == "s2" else (1, int(kind))
    width, height = (int(part) for part in args.geometry.split("x"))
    model = SaliencyModel(
        Path(args.model), (engine,), threads, tile_above_pixels=None, streams=streams
    )
    tensor = np.random.default_rng(0).standard_normal((1, 3, height, width), dtype=np.float32)
    with ThreadPoolExecutor(streams) as pool:
        saliency = list(pool.map(model.run_window, [tensor] * streams))[0]
        started = time.perf_counter()
        list(pool.map(model.run_window, [tensor] * (args.calls * streams)))
    seconds = (time.perf_counter() - started) / args.calls
    np.save(map_path, saliency)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e3
    print(json.dumps({"seconds_per_call": seconds, "peak_rss_mb": peak, "map": map_path,
                      "backend": model.backend}))  # fmt: skip
    return 0


def summarise(variants: list[str], rounds: list[dict], work: Path) -> dict:
    import numpy as np

    base = REFERENCE if REFERENCE in variants else variants[0]
    reference = np.load(rounds[0]["results"][base]["map"])
    table = {}
    for variant in variants:
        results = [done["results"][variant] for done in rounds]
        relative = [_seconds(done, base) / _seconds(done, variant) for done in rounds]
        saliency = np.load(results[0]["map"])
        table[variant] = {
            "backend": results[0]["backend"],
            "seconds_per_call": statistics.median(r["seconds_per_call"] for r in results),
            "speed_vs_reference": statistics.median(relative),
            "peak_rss_mb": max(r["peak_rss_mb"] for r in results),
            "max_abs_diff": float(np.abs(saliency - reference).max()),
            "mean_diff": float(abs(saliency.mean() - reference.mean())),
        }
    return {"reference": base, "variants": table}


def _seconds(done: dict, variant: str) -> float:
    return done["results"][variant]["seconds_per_call"]


def report(summary: dict, args) -> None:
    print(f"\n{args.model} at {args.geometry}, {args.calls} calls, median of {args.rounds} rounds")
    print_table(
        ["variant", "s/call", f"x {summary['reference']}", "peak RSS MB", "max|map diff|",
         "|mean diff|"],
        [
            [name, v["seconds_per_call"], v["speed_vs_reference"], v["peak_rss_mb"],
             f"{v['max_abs_diff']:.1e}", f"{v['mean_diff']:.1e}"]
            for name, v in summary["variants"].items()
        ],
    )  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
