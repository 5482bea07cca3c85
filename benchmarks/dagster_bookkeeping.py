"""Dagster's bookkeeping per clip partition: a backfill in ranged runs, PostgreSQL against SQLite.

One corpus of ``--clips`` uniquely named clips (hard links to a few real encodes) is computed
once into a shared results store, so the timed runs spend their time on Dagster, not on
decoding: registering the partitions, creating each run (its planned events), the step, and one
materialization per clip partition with that clip's own metadata and data version. Each backend
runs the same backfill as ``--clips-per-run`` ranged runs of the table's own definitions (the
manifest's ``clip_saliency``), in-process, with the settings the README gives PostgreSQL
(``DAGSTER_EVENT_BATCH_SIZE=1000``, ``DAGSTER_EMIT_PARTITION_SUBSET_IN_PLANNED_EVENTS=1``).

    python benchmarks/dagster_bookkeeping.py --clips 10000 --clips-per-run 500

PostgreSQL: ``scripts/ci-services.sh`` starts the local server; a scratch database is created
and dropped (``$PGHOST``/``$PGPORT``/``$PGUSER``/``$PGPASSWORD`` as for the tests). The
per-run overhead of a launched single-clip run is ``dagster_run_overhead.py``.
"""

from __future__ import annotations

import argparse
import contextlib
import getpass
import json
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("DAGSTER_EVENT_BATCH_SIZE", "1000")
os.environ.setdefault("DAGSTER_EMIT_PARTITION_SUBSET_IN_PLANNED_EVENTS", "1")

import dagster as dg  # noqa: E402
from dagster_overhead import make_corpus  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
REPO = Path(__file__).resolve().parents[1]
PARTITIONS = "saliency_bench_clips"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=10_000)
    parser.add_argument("--clips-per-run", type=int, default=500)
    parser.add_argument("--backends", default="postgres,sqlite")
    args = parser.parse_args()
    figures: dict = {"settings": vars(args), "loadavg_start": _loadavg()}
    with tempfile.TemporaryDirectory(prefix="bookkeeping-") as scratch:
        work = Path(scratch)
        manifest = _manifest(work, make_corpus(work / "corpus", args.clips, 32, 32), args)
        os.environ["SALIENCY_ASSETS_MANIFESTS"] = str(manifest)
        from saliency_assets.definitions import build_definitions

        defs = build_definitions()
        figures["precompute_s"] = _precompute(work)
        for backend in args.backends.split(","):
            with _instance(backend, work / backend) as instance:
                figures[backend] = backfill(defs, instance, args.clips_per_run)
    figures["loadavg_end"] = _loadavg()
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "dagster_bookkeeping.json").write_text(json.dumps(figures, indent=2) + "\n")
    print(json.dumps(figures, indent=2))


def backfill(defs: dg.Definitions, instance, per_run: int) -> dict:
    """Register every clip, then run the backfill range by range; time per partition."""
    refresh = defs.resolve_job_def("saliency_bench_refresh")
    started = time.perf_counter()
    refresh.execute_in_process(instance=instance)
    register_s = time.perf_counter() - started
    keys = instance.get_dynamic_partitions(PARTITIONS)
    job = defs.resolve_job_def("saliency_bench_clips")
    run_walls, engine = [], 0.0
    for start in range(0, len(keys), per_run):
        chunk = keys[start : start + per_run]
        tags = {
            "dagster/asset_partition_range_start": chunk[0],
            "dagster/asset_partition_range_end": chunk[-1],
        }
        began = time.perf_counter()
        result = job.execute_in_process(instance=instance, tags=tags)
        run_walls.append(time.perf_counter() - began)
        engine += result.get_asset_check_evaluations()[0].metadata["seconds"].value
        assert len(result.get_asset_materialization_events()) == len(chunk)
    total = sum(run_walls)
    return {
        "partitions": len(keys),
        "runs": len(run_walls),
        "register_s": round(register_s, 2),
        "backfill_wall_s": round(total, 2),
        "engine_s": round(engine, 2),
        "bookkeeping_ms_per_partition": round(1000 * (total - engine) / len(keys), 2),
        "run_wall_s_median": round(sorted(run_walls)[len(run_walls) // 2], 2),
    }


def _precompute(work: Path) -> float:
    """Every clip into the table's results store once, through the core (no Dagster)."""
    from saliency_assets.core.run.engine import compute_clips, prepare_model, unique_clips
    from saliency_assets.core.run.results_store import ResultStore
    from saliency_assets.core.tables.table_files import read_table
    from saliency_assets.defs.corpora import load_corpus_tables

    (table,) = load_corpus_tables()
    config = table.spec.config
    started = time.perf_counter()
    clips = unique_clips(read_table(table.spec.input).rows, config)
    store = ResultStore(work / "storage" / table.name / "results")
    compute_clips(clips, config, prepare_model(config), store=store)
    return round(time.perf_counter() - started, 2)


@contextlib.contextmanager
def _instance(backend: str, home: Path):
    home.mkdir(parents=True)
    if backend == "sqlite":
        with dg.instance_for_test(temp_dir=str(home)) as instance:
            yield instance
        return
    with _scratch_database() as settings:
        config = (REPO / "dagster-postgres.yaml").read_text()
        for name, value in settings.items():
            os.environ[f"DAGSTER_PG_{name.upper()}"] = str(value)
        (home / "dagster.yaml").write_text(config)
        with dg.DagsterInstance.from_config(str(home)) as instance:
            yield instance


@contextlib.contextmanager
def _scratch_database():
    import psycopg2

    server = {
        "host": os.environ.get("PGHOST", "127.0.0.1"),
        "port": os.environ.get("PGPORT", "5432"),
        "user": os.environ.get("PGUSER", getpass.getuser()),
        "password": os.environ.get("PGPASSWORD", ""),
    }
    admin = psycopg2.connect(dbname="postgres", connect_timeout=5, **server)
    admin.autocommit = True
    name = f"saliency_bookkeeping_{os.getpid()}"
    with admin.cursor() as cursor:
        cursor.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        cursor.execute(f'CREATE DATABASE "{name}"')
    try:
        yield {
            "username": server["user"],
            "password": server["password"],
            "host": server["host"],
            "port": server["port"],
            "db": name,
        }
    finally:
        with admin.cursor() as cursor:
            cursor.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


def _manifest(work: Path, table: Path, args) -> Path:
    entry = {
        "id": "bench",
        "input": str(table),
        "output": str(work / "out.jsonl"),
        "root": str(table.parent / "clips"),
        "max_frames": 1,
        "frame_samples": 1,
        "dagster": {"clips_per_run": args.clips_per_run, "storage": str(work / "storage")},
    }
    manifest = work / "manifest.json"
    manifest.write_text(json.dumps({"tables": [entry]}))
    return manifest


def _loadavg() -> list[str]:
    return Path("/proc/loadavg").read_text().split()[:3]


if __name__ == "__main__":
    main()
