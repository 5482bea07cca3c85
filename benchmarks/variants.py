"""Two or more versions of the product, the same command on the same clips, paired.

Every variant is a git ref (its tree is exported to ``results/work/variants/<sha>`` and run
from there, through ``PYTHONPATH`` and as the working directory: ``python -m`` puts the working
directory first on ``sys.path``, so a run from the checkout imports the checkout's package
whatever ``PYTHONPATH`` says; each variant is checked to import its own tree before any round)
or ``WORKTREE`` (the checkout as it is). Each round runs every variant
once, in a rotated order (round r starts with the r-th), with ``/proc/loadavg`` before each;
per round, each variant's wall time is divided by the first variant's (paired ratio), and the
median over the rounds is printed with every round's ratio and load beside it. Memory: the
largest peak of the process tree's summed RSS and PSS (``common.run_measured``). Values: the
largest |difference| of ``saliency_mean``/``saliency_var`` from the first variant's.

On a loaded machine the ratios of many short rounds are what to read, never the seconds.

    python benchmarks/variants.py --variants d5e529b,WORKTREE --resolution 1080p --clips 3
    python benchmarks/variants.py --variants d5e529b,WORKTREE --resolution 540p --mode 288 \\
        --clips 6 --rounds 10
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tarfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (  # noqa: E402
    PYTHON,
    REPO_ROOT,
    RESULTS_DIR,
    loadavg,
    print_table,
    run_measured,
    shared_model,
    table_row,
    write_json,
)
from corpus import DEFAULT_OUT, load_corpus  # noqa: E402

WORKTREE = "WORKTREE"
WORK_DIR = RESULTS_DIR / "work" / "variants"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    model = args.model if args.model.endswith(".onnx") else str(shared_model(args.model))
    clips = [c for c in load_corpus(Path(args.corpus)) if c.kind.startswith(f"{args.resolution}-")]
    clips = clips[: args.clips] if args.clips else clips
    if not clips:
        raise SystemExit(f"no {args.resolution} clips in the corpus: run benchmarks/corpus.py")
    WORK_DIR.mkdir(parents=True, exist_ok=True)
    table = WORK_DIR / f"{args.resolution}-{len(clips)}-table.jsonl"
    table.write_text("".join(json.dumps(table_row(vars(clip))) + "\n" for clip in clips))
    trees = {name: _tree(name) for name in args.variants.split(",")}
    for name, tree in trees.items():
        _check_imports_its_tree(name, tree)
    rounds = [_round(number, trees, table, model, args) for number in range(args.rounds)]
    summary = summarise(list(trees), rounds)
    report(summary, args, len(clips))
    payload = {"command": " ".join(sys.argv), "clips": len(clips), "rounds": rounds, **summary}
    print(f"wrote {write_json('variants', payload)}")
    return 0


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", required=True, help="comma-separated git refs or WORKTREE")
    parser.add_argument("--corpus", default=str(DEFAULT_OUT))
    parser.add_argument("--resolution", default="1080p")
    parser.add_argument("--clips", type=int, default=3, help="first N clips (0: all)")
    parser.add_argument("--mode", default="native", help="--inference-size: native or N")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--model", default="saliency_student_v1", help="name or .onnx path")
    parser.add_argument("--extra", default="", help="more materialize arguments, one string")
    return parser.parse_args(argv)


def _tree(name: str) -> Path | None:
    """The source tree a variant runs from: None for the worktree, else the ref exported."""
    if name == WORKTREE:
        return None
    sha = subprocess.run(
        ["git", "rev-parse", name], cwd=REPO_ROOT, capture_output=True, text=True, check=True
    ).stdout.strip()
    tree = WORK_DIR / sha
    if not (tree / "saliency_assets").is_dir():
        archive = WORK_DIR / f"{sha}.tar"
        subprocess.run(["git", "archive", "-o", str(archive), sha], cwd=REPO_ROOT, check=True)
        with tarfile.open(archive) as handle:
            handle.extractall(tree, filter="data")
        archive.unlink()
    return tree


def _environment(tree: Path | None) -> tuple[dict, Path]:
    """The environment and working directory that make a variant's run import ``tree``."""
    env = dict(os.environ)
    if tree is None:
        return env, REPO_ROOT
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(tree), env.get("PYTHONPATH")]))
    return env, tree


def _check_imports_its_tree(name: str, tree: Path | None) -> None:
    env, cwd = _environment(tree)
    probe = [PYTHON, "-c", "import saliency_assets; print(saliency_assets.__file__)"]
    found = subprocess.run(probe, env=env, cwd=cwd, capture_output=True, text=True, check=True)
    expected = (tree or REPO_ROOT).resolve() / "saliency_assets" / "__init__.py"
    if Path(found.stdout.strip()).resolve() != expected:
        raise SystemExit(f"variant {name} imports {found.stdout.strip()}, not {expected}")


def _round(number: int, trees: dict, table: Path, model: str, args) -> dict:
    names = list(trees)
    order = names[number % len(names) :] + names[: number % len(names)]
    done: dict = {"order": order, "loadavg": {}, "results": {}}
    for name in order:
        done["loadavg"][name] = loadavg()
        done["results"][name] = _run(name, trees[name], table, model, args)
    loads = ", ".join(f"{name} {done['loadavg'][name][0]:.1f}" for name in order)
    print(f"round {number + 1}: load before {loads}", flush=True)
    return done


def _run(name: str, tree: Path | None, table: Path, model: str, args) -> dict:
    output = WORK_DIR / f"out-{name.replace('/', '_')}.jsonl"
    command = [
        PYTHON, "-m", "saliency_assets.cli", "materialize", "--input", str(table), "--output",
        str(output), "--model-path", model, "--inference-size", args.mode, "--jobs",
        str(args.jobs), "--max-frames", str(args.frames), "--frame-samples", str(args.frames),
        "--results-store", "none", *args.extra.split(),
    ]  # fmt: skip
    env, cwd = _environment(tree)
    measured = run_measured(command, cwd=cwd, env=env)
    rows = [json.loads(line) for line in output.read_text().splitlines()] if output.exists() else []
    if measured.returncode != 0:
        errors = [row.get("saliency_error") for row in rows if row.get("saliency_error")]
        raise SystemExit(f"variant {name} failed: {errors}\n{measured.stderr[-2000:]}")
    return {
        "seconds": measured.seconds,
        "peak_rss_mb": measured.peak_rss_mb,
        "peak_pss_mb": measured.peak_pss_mb,
        "values": [(row.get("saliency_mean"), row.get("saliency_var")) for row in rows],
    }


def summarise(names: list[str], rounds: list[dict]) -> dict:
    first = names[0]
    table = {}
    for name in names:
        ratios = [
            done["results"][first]["seconds"] / done["results"][name]["seconds"] for done in rounds
        ]
        results = [done["results"][name] for done in rounds]
        table[name] = {
            "median_s": statistics.median(r["seconds"] for r in results),
            "speed_vs_first_median": statistics.median(ratios),
            "speed_vs_first_rounds": ratios,
            "peak_rss_mb": max(r["peak_rss_mb"] for r in results),
            "peak_pss_mb": max(r["peak_pss_mb"] for r in results),
            "max_abs_diff": _max_difference(rounds[0]["results"][first], results[0]),
        }
    loads = [load[0] for done in rounds for load in done["loadavg"].values()]
    return {"variants": table, "load_min": min(loads), "load_max": max(loads)}


def _max_difference(reference: dict, other: dict) -> float:
    return max(
        (abs(a - b) for ref, val in zip(reference["values"], other["values"], strict=True)
         for a, b in zip(ref, val, strict=True) if a is not None and b is not None),
        default=float("nan"),
    )  # fmt: skip


def report(summary: dict, args, clips: int) -> None:
    print(
        f"\n{clips} clips at {args.resolution}, --inference-size {args.mode}, --jobs {args.jobs}; "
        f"load average before the runs {summary['load_min']:.1f}-{summary['load_max']:.1f}"
    )
    print_table(
        ["variant", "median s", "speed x first", "rounds", "RSS MB", "PSS MB", "max|diff|"],
        [
            [name, v["median_s"], v["speed_vs_first_median"],
             " ".join(f"{r:.2f}" for r in v["speed_vs_first_rounds"]), v["peak_rss_mb"],
             v["peak_pss_mb"], f"{v['max_abs_diff']:.1e}"]
            for name, v in summary["variants"].items()
        ],
    )  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
