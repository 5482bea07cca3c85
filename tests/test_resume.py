"""Kill ``saliency-assets materialize`` with SIGKILL mid-table, run it again: the clips it had
stored are not recomputed, the table equals an uninterrupted run's byte for byte, and no partial
output (or temp file) is ever left at or beside the output path."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from support.bounded import group_members, run_command, start_command, write_report_line
from support.clips import make_clip

from saliency_assets.core.tables.atomic import remove_stale_temp_files, temp_file_prefix

CLIPS = 96  # three flushes of the engine's 32-result batches
ROWS_PER_CLIP = 2
KILL_WITHIN_S = 60.0


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> tuple[Path, Path]:
    """CLIPS small clips, each a distinct encode (the store finds results by content, so copies
    would share one), and a table of ROWS_PER_CLIP rows per clip, interleaved."""
    folder = tmp_path_factory.mktemp("resume")
    clips = folder / "clips"
    clips.mkdir()
    for index in range(CLIPS):
        make_clip(clips / f"clip{index:03d}.mp4", 64 + 2 * (index // 4), 48, 3 + index % 4)
    rows = [
        {"src": f"clip{index:03d}.mp4", "frame": frame, "note": f"row {frame}-{index}"}
        for frame in range(ROWS_PER_CLIP)
        for index in range(CLIPS)
    ]
    table = folder / "features.jsonl"
    table.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return clips, table


def materialize_args(table: Path, clips: Path, output: Path, store: Path) -> list[str]:
    return [
        "materialize",
        "--input",
        str(table),
        "--output",
        str(output),
        "--root",
        str(clips),
        "--results-store",
        str(store),
        "--jobs",
        "1",
        "--max-frames",
        "3",
    ]


def test_killed_run_resumes_without_recomputing_stored_clips(corpus, tmp_path, request):
    clips, table = corpus
    reference = tmp_path / "reference" / "out.jsonl"
    uninterrupted = run_command(materialize_args(table, clips, reference, tmp_path / "store-a"))
    assert uninterrupted.returncode == 0, uninterrupted.describe()

    output = tmp_path / "resumed" / "out.jsonl"
    store = tmp_path / "store-b"
    args = materialize_args(table, clips, output, store)
    kill_after_first_stored_part(args, store, output)
    stored = stored_clip_keys(store)
    assert 0 < len(stored) < CLIPS, "the kill must land mid-table"
    assert not output.exists()
    assert not output.parent.exists() or list(output.parent.iterdir()) == []

    audit = tmp_path / "audit.json"
    resumed = run_command([*args, "--audit-json", str(audit)])
    assert resumed.returncode == 0, resumed.describe()
    record = json.loads(audit.read_text())
    recomputed = record["clips"] - record["reused_clips"]
    write_report_line(
        request,
        f"resume: {CLIPS} clips, {len(stored)} stored before SIGKILL, "
        f"{record['reused_clips']} reused and {recomputed} recomputed on the rerun",
    )
    assert record["clips"] == CLIPS
    assert record["reused_clips"] == len(stored)
    assert output.read_bytes() == reference.read_bytes()
    assert [path.name for path in output.parent.iterdir()] == ["out.jsonl"]
    # Every clip has exactly one stored result: nothing stored was computed again.
    keys = [key for part in parts(store) for key in pq.read_table(part)["clip_key"].to_pylist()]
    assert len(keys) == len(set(keys)) == CLIPS


def test_temp_files_of_killed_writers_are_hidden_and_cleaned(corpus, tmp_path):
    """A writer killed mid-write leaves only a hidden temp file; the next write removes it, and
    leaves alone a temp file whose writer is still alive."""
    clips, table = corpus
    output = tmp_path / "out" / "out.jsonl"
    output.parent.mkdir()
    stale = output.parent / f"{temp_file_prefix(dead_process_id())}abcd1234.tmp"
    live = output.parent / f"{temp_file_prefix(os.getpid())}efgh5678.tmp"
    stale.write_text('{"src": "half a ro')
    live.write_text('{"src": "being written')
    done = run_command(materialize_args(table, clips, output, tmp_path / "store"))
    assert done.returncode == 0, done.describe()
    assert sorted(path.name for path in output.parent.iterdir()) == [live.name, "out.jsonl"]
    assert remove_stale_temp_files(output.parent) == []


def kill_after_first_stored_part(args: list[str], store: Path, output: Path) -> None:
    """Start the command, SIGKILL its whole process group as soon as the results store holds a
    part file; the output path must not appear meanwhile."""
    process = start_command(args)
    deadline = time.monotonic() + KILL_WITHIN_S
    try:
        while not parts(store):
            assert process.poll() is None, "the run finished before it could be killed"
            assert not output.exists(), "output appeared before the table was done"
            assert time.monotonic() < deadline, "no results were stored"
            time.sleep(0.005)
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    deadline = time.monotonic() + 5
    while group_members(process.pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert group_members(process.pid) == []


def parts(store: Path) -> list[Path]:
    return sorted(store.glob("part-*.parquet")) if store.is_dir() else []


def stored_clip_keys(store: Path) -> set[str]:
    return {key for part in parts(store) for key in pq.read_table(part)["clip_key"].to_pylist()}


def dead_process_id() -> int:
    child = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        check=True,
        capture_output=True,
        text=True,
    )
    return int(child.stdout)
