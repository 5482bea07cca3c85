"""The results store under faults, through the command on real clips: edited sources are
recomputed, copies are reused, damaged parts are set aside, an unwritable store costs only the
reuse, a kill loses no finished clip, and a URL is never taken for a folder."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import run_cli, run_cli_in_process
from support.bounded import start_command
from support.clips import ffmpeg_exe, make_clip, make_raw_yuv, raw_frame_bytes

RAW_NAME = "edit_256x192.yuv"  # the geometry is read from the name
STORE_WAIT_S = 120.0  # generous: 2 cores shared with other work


def write_table(path: Path, names: list[str]) -> Path:
    path.write_text("".join(json.dumps({"src": name}) + "\n" for name in names))
    return path


def materialize(table: Path, root: Path, store: Path | str, folder: Path, *flags: str):
    """Run the command; return (completed process, output rows, audit record)."""
    output, audit = folder / "out.jsonl", folder / "audit.json"
    done = run_cli_in_process(
        "materialize", "--input", str(table), "--output", str(output), "--root", str(root),
        "--results-store", str(store), "--audit-json", str(audit), "--jobs", "1",
        "--max-frames", "3", *flags,
    )  # fmt: skip
    if done.returncode != 0:
        return done, None, None
    rows = [json.loads(line) for line in output.read_text().splitlines()]
    return done, rows, json.loads(audit.read_text())


def warnings_of(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if "WARNING" in line]


@pytest.fixture
def clips(tmp_path) -> Path:
    folder = tmp_path / "clips"
    folder.mkdir()
    make_clip(folder / "a.mp4", 64, 48, 4)
    make_clip(folder / "b.mp4", 80, 48, 4)
    make_raw_yuv(folder / RAW_NAME, 256, 192, 4)
    return folder


def test_in_place_edit_past_the_first_64_kib_is_recomputed(clips, tmp_path):
    """Same size, same mtime, a changed frame past the first 64 KiB: a new value, not the old."""
    table = write_table(tmp_path / "in.jsonl", [RAW_NAME])
    store = tmp_path / "store"
    _, before, _ = materialize(table, clips, store, tmp_path)
    raw = clips / RAW_NAME
    stat = raw.stat()
    frame = raw_frame_bytes(256, 192)
    assert frame > 64 * 1024
    with raw.open("r+b") as handle:  # frame 1's luma turns flat
        handle.seek(frame)
        handle.write(bytes([200]) * (256 * 192))
    os.utime(raw, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert (raw.stat().st_size, raw.stat().st_mtime_ns) == (stat.st_size, stat.st_mtime_ns)

    done, after, audit = materialize(table, clips, store, tmp_path)
    assert done.returncode == 0, done.stderr
    _, fresh, _ = materialize(table, clips, "none", tmp_path)
    assert audit["reused_clips"] == 0
    assert after[0]["saliency_mean"] == fresh[0]["saliency_mean"]
    assert after[0]["saliency_mean"] != before[0]["saliency_mean"]


def test_the_same_bytes_elsewhere_are_reused(clips, tmp_path):
    """A copy in another folder (another path, mtime and inode, as on another host) is found."""
    table = write_table(tmp_path / "in.jsonl", ["a.mp4", RAW_NAME])
    store = tmp_path / "store"
    _, first, _ = materialize(table, clips, store, tmp_path)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    for name in ("a.mp4", RAW_NAME):
        (elsewhere / name).write_bytes((clips / name).read_bytes())
        os.utime(elsewhere / name, ns=(1, 1))
    done, again, audit = materialize(table, elsewhere, store, tmp_path)
    assert done.returncode == 0, done.stderr
    assert (audit["clips"], audit["reused_clips"]) == (2, 2)
    assert [row["saliency_mean"] for row in again] == [row["saliency_mean"] for row in first]


def damage_zero_bytes(part: Path) -> None:
    part.write_bytes(b"")


def damage_truncate(part: Path) -> None:
    part.write_bytes(part.read_bytes()[: part.stat().st_size // 2])


def damage_garbage(part: Path) -> None:
    part.write_bytes(os.urandom(part.stat().st_size))


def damage_schema(part: Path) -> None:
    pq.write_table(pa.table({"clip_key": ["a.mp4"], "saliency": [0.5]}), part)


@pytest.mark.parametrize(
    "damage", [damage_zero_bytes, damage_truncate, damage_garbage, damage_schema]
)
def test_a_damaged_part_is_set_aside_and_its_clips_recomputed(clips, tmp_path, damage):
    table = write_table(tmp_path / "in.jsonl", ["a.mp4", "b.mp4"])
    store = tmp_path / "store"
    _, first, _ = materialize(table, clips, store, tmp_path)
    (part,) = store.glob("part-*.parquet")
    damage(part)

    done, again, audit = materialize(table, clips, store, tmp_path)
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    (warning,) = warnings_of(done.stderr)
    assert str(store) in warning and part.name in warning
    assert (store / f"{part.name}.damaged").is_file()
    assert audit["reused_clips"] == 0
    assert again == first
    _, _, third = materialize(table, clips, store, tmp_path)
    assert third["reused_clips"] == 2


def test_an_unwritable_store_warns_once_and_the_table_is_written(clips, tmp_path):
    """A store folder under a regular file cannot be created, even by root."""
    table = write_table(tmp_path / "in.jsonl", ["a.mp4", "b.mp4"])
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file")
    store = blocker / "store"
    done, rows, audit = materialize(table, clips, store, tmp_path)
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    (warning,) = warnings_of(done.stderr)
    assert str(store) in warning and "not stored" in warning
    assert [row["saliency_status"] for row in rows] == ["ok", "ok"]
    assert audit["unstored_clips"] == 2


@pytest.mark.parametrize("value", ["mysql://user:secret@db:3306/corpus", "s3://bucket/x"])
def test_a_url_results_store_is_a_usage_error_not_a_folder(clips, tmp_path, value):
    table = write_table(tmp_path / "in.jsonl", ["a.mp4"])
    done = run_cli(
        "materialize", "--input", str(table), "--output", str(tmp_path / "out.jsonl"),
        "--results-store", value, "--root", str(clips), cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert value.split("://")[0] + "://" in done.stderr and "secret" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert sorted(path.name for path in tmp_path.iterdir()) == ["clips", "in.jsonl"]


def test_a_relative_manifest_results_store_is_under_the_manifest_folder(clips, tmp_path):
    project = tmp_path / "project"
    project.mkdir()
    write_table(project / "in.jsonl", ["a.mp4", "b.mp4"])
    entry = {
        "id": "t", "input": "in.jsonl", "output": "out.jsonl", "audit_json": "audit.json",
        "root": str(clips), "results_store": "cache/results", "jobs": 1, "max_frames": 3,
    }  # fmt: skip
    manifest = project / "manifest.json"
    manifest.write_text(json.dumps({"tables": [entry]}))
    reused = []
    for cwd in (tmp_path, clips):
        done = run_cli("batch", "--manifest", str(manifest), cwd=cwd)
        assert done.returncode == 0, done.stderr
        reused.append(json.loads((project / "audit.json").read_text())["reused_clips"])
    assert reused == [0, 2]
    assert list((project / "cache" / "results").glob("part-*.parquet"))
    assert not (tmp_path / "cache").exists() and not (clips / "cache").exists()


def slow_ffmpeg(folder: Path, switch: Path) -> Path:
    """The real ffmpeg, but a clip named *slow* takes minutes while ``switch`` exists."""
    wrapper = folder / "slow-ffmpeg"
    wrapper.write_text(
        "#!/bin/sh\n"
        f'case "$*" in *slow*) [ -e "{switch}" ] && sleep 300 ;; esac\n'
        f'exec "{ffmpeg_exe()}" "$@"\n'
    )
    wrapper.chmod(0o755)
    return wrapper


def stored_clip_names(store: Path) -> set[str]:
    parts = sorted(store.glob("part-*.parquet")) if store.is_dir() else []
    return {Path(key).name for part in parts for key in pq.read_table(part)["clip_key"].to_pylist()}


def test_finished_clips_survive_a_kill_during_a_slow_one(clips, tmp_path):
    """Three quick clips, then one that takes minutes: SIGKILL during it keeps the three."""
    make_clip(clips / "c.mp4", 96, 48, 4)
    make_clip(clips / "slow.mp4", 112, 48, 4)
    table = write_table(tmp_path / "in.jsonl", ["a.mp4", "b.mp4", "c.mp4", "slow.mp4"])
    switch = tmp_path / "slow-on"
    switch.touch()
    ffmpeg = slow_ffmpeg(tmp_path, switch)
    store = tmp_path / "store"
    args = [
        "materialize", "--input", str(table), "--output", str(tmp_path / "out.jsonl"),
        "--root", str(clips), "--results-store", str(store), "--jobs", "1",
        "--max-frames", "3", "--ffmpeg-bin", str(ffmpeg),
    ]  # fmt: skip
    process = start_command(args)
    deadline = time.monotonic() + STORE_WAIT_S
    try:
        while stored_clip_names(store) != {"a.mp4", "b.mp4", "c.mp4"}:
            assert process.poll() is None, "the run ended before the slow clip was killed"
            assert time.monotonic() < deadline, "finished clips were not stored meanwhile"
            time.sleep(0.05)
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()

    switch.unlink()
    audit = tmp_path / "audit.json"
    done = run_cli(*args, "--audit-json", str(audit))
    assert done.returncode == 0, done.stderr
    record = json.loads(audit.read_text())
    assert (record["clips"], record["reused_clips"]) == (4, 3)
