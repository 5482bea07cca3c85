"""Memory per row of a per-frame feature table, through the product's own table path.

A per-frame table (``--rows`` rows: one path column, a frame index and ``--features`` float
feature columns, ``--frames-per-clip`` rows per clip) is written as Parquet and as JSONL; each is
then run in a fresh process through ``materialize_table`` (read, plan, join, write) with clips
that do not exist, so no clip is decoded and what is measured is the table's own cost. Peak RSS
(VmHWM, reset through /proc/self/clear_refs after the imports) above the post-import RSS,
divided by the number of rows, is the figure.

    python benchmarks/table_memory.py [--rows 150000] [--features 20]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

_MEASURE = """
import json, sys
from pathlib import Path
from saliency_assets.core.contract.config import MaterializeConfig
from saliency_assets.core.run.engine import prepare_model
from saliency_assets.core.run.table_run import materialize_table

def status(key):
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024

source, output = Path(sys.argv[1]), Path(sys.argv[2])
config = MaterializeConfig(results_store="none", jobs=1)
model = prepare_model(config)
Path("/proc/self/clear_refs").write_text("5")
baseline = status("VmRSS")
run = materialize_table(source, output, config, model, store=None, log=open("/dev/null", "w"))
print(json.dumps({"baseline": baseline, "peak": status("VmHWM"), "rows": run.summary["total"]}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=150_000)
    parser.add_argument("--features", type=int, default=20)
    parser.add_argument("--frames-per-clip", type=int, default=300)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        table = per_frame_table(args.rows, args.features, args.frames_per_clip)
        parquet, jsonl = Path(folder) / "in.parquet", Path(folder) / "in.jsonl"
        pq.write_table(table, parquet)
        with jsonl.open("w") as handle:
            for row in table.to_pylist():
                handle.write(json.dumps(row) + "\n")
        for source in (parquet, jsonl):
            figures = measure(source, Path(folder) / f"out{source.suffix}")
            per_row = (figures["peak"] - figures["baseline"]) / figures["rows"]
            print(
                f"{source.suffix[1:]:8} {figures['rows']} rows x {table.num_columns} columns: "
                f"peak {figures['peak'] / 2**20:.0f} MiB, "
                f"{(figures['peak'] - figures['baseline']) / 2**20:.0f} MiB above the imports, "
                f"{per_row:.0f} B per row"
            )


def per_frame_table(rows: int, features: int, frames_per_clip: int) -> pa.Table:
    frames = [index % frames_per_clip for index in range(rows)]
    columns = {
        "src": [f"clips/corpus/clip_{index // frames_per_clip:06d}.mp4" for index in range(rows)],
        "frame": frames,
    }
    for feature in range(features):
        columns[f"feature_{feature:02d}"] = [
            (index * 7 + feature) % 1000 / 997.0 for index in range(rows)
        ]
    return pa.table(columns)


def measure(source: Path, output: Path) -> dict:
    done = subprocess.run(
        [sys.executable, "-c", _MEASURE, str(source), str(output)],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(done.stdout)


if __name__ == "__main__":
    main()
