"""The source fingerprint and this host's memo of it: a rerun reads no unchanged file again, an
edit that restores size and mtime is read again (its ctime moved), a file changed just now is
not remembered, and a memo that is damaged or planted is seen to be what the command uses."""

from __future__ import annotations

import io
import os
import sqlite3
import time
from pathlib import Path

import blake3
import pytest
from support.clips import make_clip, make_raw_yuv, raw_frame_bytes
from test_store_faults import RAW_NAME, materialize, write_table

from saliency_assets.core.run import fingerprints
from saliency_assets.core.run.fingerprints import FingerprintMemo


@pytest.fixture
def settled_sooner(monkeypatch) -> None:
    """Files count as settled 0.2 s after their last change instead of 2 s, for the tests that
    wait for it (``wait_until_settled`` and the commands, which run in this process, read the
    module's value); a file changed just now is tested against the real 2 s."""
    monkeypatch.setattr(fingerprints, "SETTLED_AFTER_NS", 200_000_000)


def wait_until_settled(*paths: Path) -> None:
    """Sleep until every file's last change is old enough for the memo to remember it."""
    newest = max(path.stat().st_ctime_ns for path in paths)
    left_ns = newest + fingerprints.SETTLED_AFTER_NS - time.time_ns()
    if left_ns > 0:
        time.sleep(left_ns / 1e9 + 0.05)


@pytest.fixture
def hashed(monkeypatch) -> list[str]:
    """The names of the files the fingerprint code actually reads through, in order."""
    reads: list[str] = []
    real = fingerprints.hash_file

    def counting(handle):
        reads.append(Path(handle.name).name)
        return real(handle)

    monkeypatch.setattr(fingerprints, "hash_file", counting)
    return reads


def edit_keeping_size_and_mtime(path: Path, offset: int) -> None:
    stat = path.stat()
    with path.open("r+b") as handle:
        handle.seek(offset)
        handle.write(bytes([200]) * 4096)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert (path.stat().st_size, path.stat().st_mtime_ns) == (stat.st_size, stat.st_mtime_ns)


def test_the_fingerprint_is_blake3_of_every_byte(tmp_path):
    raw = make_raw_yuv(tmp_path / "clip_64x48.yuv", 64, 48, 3)
    expected = "blake3:" + blake3.blake3(raw.read_bytes()).hexdigest()
    assert FingerprintMemo(None).fingerprint(raw) == expected


def test_a_rerun_reads_no_unchanged_file_and_an_edit_with_restored_mtime_is_read(
    tmp_path, hashed, settled_sooner
):
    raw = make_raw_yuv(tmp_path / "clip_256x192.yuv", 256, 192, 4)
    wait_until_settled(raw)
    memo_path = tmp_path / "memo.sqlite"
    first = FingerprintMemo(memo_path).fingerprint(raw)
    again = FingerprintMemo(memo_path).fingerprint(raw)  # a new run, same host
    assert again == first
    assert hashed == [raw.name]

    edit_keeping_size_and_mtime(raw, raw_frame_bytes(256, 192))
    edited = FingerprintMemo(memo_path).fingerprint(raw)
    assert hashed == [raw.name, raw.name]
    assert edited != first
    assert edited == "blake3:" + blake3.blake3(raw.read_bytes()).hexdigest()


def test_a_file_changed_just_now_is_not_remembered(tmp_path, hashed):
    """Its next change may fall in the same timestamp tick and leave its ctime as it is."""
    raw = make_raw_yuv(tmp_path / "clip_64x48.yuv", 64, 48, 3)
    memo = FingerprintMemo(tmp_path / "memo.sqlite")
    memo.fingerprint(raw)
    memo.fingerprint(raw)
    assert hashed == [raw.name, raw.name]


def memo_rows(memo: Path) -> dict[str, str]:
    with sqlite3.connect(memo) as connection:
        return dict(connection.execute("SELECT file, digest FROM fingerprints"))


def file_id(path: Path) -> str:
    stat = path.stat()
    return f"{stat.st_dev}:{stat.st_ino}"


@pytest.fixture
def settled_clips(tmp_path, settled_sooner) -> Path:
    folder = tmp_path / "clips"
    folder.mkdir()
    make_clip(folder / "a.mp4", 64, 48, 4)
    make_raw_yuv(folder / RAW_NAME, 256, 192, 4)
    wait_until_settled(folder / "a.mp4", folder / RAW_NAME)
    return folder


def test_the_command_takes_fingerprints_from_the_memo(settled_clips, tmp_path):
    """A planted digest in the memo is what the command keys the clip by: proof that a
    rerun does not read the file (the planted key misses the store, so the clip is recomputed)."""
    memo = tmp_path / "fingerprints.sqlite"  # where conftest points the commands
    table = write_table(tmp_path / "in.jsonl", ["a.mp4", RAW_NAME])
    store = tmp_path / "store"
    done, first, _ = materialize(table, settled_clips, store, tmp_path)
    assert done.returncode == 0, done.stderr
    raw = settled_clips / RAW_NAME
    assert memo_rows(memo)[file_id(raw)] == "blake3:" + blake3.blake3(raw.read_bytes()).hexdigest()

    _, _, audit = materialize(table, settled_clips, store, tmp_path)
    assert audit["reused_clips"] == 2
    with sqlite3.connect(memo) as connection:
        connection.execute(
            "UPDATE fingerprints SET digest = ? WHERE file = ?",
            ("blake3:" + "0" * 64, file_id(raw)),
        )
    done, again, audit = materialize(table, settled_clips, store, tmp_path)
    assert done.returncode == 0, done.stderr
    assert audit["reused_clips"] == 1
    assert [row["saliency_mean"] for row in again] == [row["saliency_mean"] for row in first]


def test_a_damaged_memo_is_set_aside_and_the_run_goes_on(settled_clips, tmp_path):
    memo = tmp_path / "fingerprints.sqlite"
    memo.write_bytes(b"not a database at all, " * 100)
    table = write_table(tmp_path / "in.jsonl", ["a.mp4"])
    store = tmp_path / "store"
    done, _, _ = materialize(table, settled_clips, store, tmp_path)
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    assert (tmp_path / "fingerprints.sqlite.damaged").exists()
    assert file_id(settled_clips / "a.mp4") in memo_rows(memo)
    _, _, audit = materialize(table, settled_clips, store, tmp_path)
    assert audit["reused_clips"] == 1


def test_a_memo_that_cannot_be_opened_is_one_warning_and_every_file_is_read(
    tmp_path, hashed, settled_sooner
):
    raw = make_raw_yuv(tmp_path / "clip_64x48.yuv", 64, 48, 3)
    wait_until_settled(raw)
    (tmp_path / "not-a-folder").write_text("")
    log = io.StringIO()
    memo = FingerprintMemo(tmp_path / "not-a-folder" / "memo.sqlite", log)
    fingerprints_seen = {memo.fingerprint(raw), memo.fingerprint(raw)}
    assert fingerprints_seen == {"blake3:" + blake3.blake3(raw.read_bytes()).hexdigest()}
    assert hashed == [raw.name, raw.name]
    lines = log.getvalue().splitlines()
    assert len(lines) == 1 and "not-a-folder/memo.sqlite" in lines[0], lines
