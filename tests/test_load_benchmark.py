"""The load benchmark (benchmarks/load.py), scaled down to 3,000 rows over 400 clips: it runs the
real command end to end and every row comes back ok, in order. No timing is asserted."""

import json
import subprocess
import sys

from conftest import REPO_ROOT


def test_scaled_down_load_run_keeps_every_row(tmp_path):
    report = tmp_path / "load.json"
    command = [sys.executable, str(REPO_ROOT / "benchmarks" / "load.py"), "--rows", "3000"]
    command += ["--clips", "400", "--jobs", "2", "--workdir", str(tmp_path), "--json", str(report)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    (run,) = json.loads(report.read_text())["runs"]
    assert (run["rows"], run["clips"], run["ok"], run["rows_kept"]) == (3000, 400, 3000, True)
    assert run["peak_tree_rss_mb"] > 0
