"""Outputs, through the real command on real clips: they never write over an input, a reader
that has gone away never changes the outcome, a full disk is one line naming the file with no
temp file left, modes follow the umask (or the replaced file), and long names work."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import pytest
from conftest import run_cli, run_cli_in_process

from saliency_assets.core.contract.errors import ConfigError
from saliency_assets.core.contract.overwrites import reject_overwrites
from saliency_assets.core.model.saliency_model import choose_model

TRACEBACK = "Traceback (most recent call last)"


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture
def table(tmp_path, clip_dir) -> Path:
    return write_jsonl(tmp_path / "in.jsonl", [{"src": str(clip_dir / "clip.mp4")}])


def materialize(table: Path, output: Path, *flags: str, run=run_cli):
    """The command in a new process, or in this one (``run=run_cli_in_process``) where what is
    tested is a refusal before any work."""
    return run("materialize", "--input", str(table), "--output", str(output), "--jobs", "1", *flags)


def assert_usage_error_naming(done, *paths: Path) -> None:
    assert done.returncode == 2, done.stderr
    assert TRACEBACK not in done.stderr
    assert len(done.stderr.splitlines()) == 1, done.stderr
    for path in paths:
        assert str(path) in done.stderr


# --- outputs never write over inputs --------------------------------------------------------


def test_audit_that_is_the_input_is_refused_before_any_clip(tmp_path, table):
    before = table.read_bytes()
    store = tmp_path / "store"
    done = materialize(table, tmp_path / "out.jsonl", "--audit-json", str(table),
                       "--results-store", str(store), run=run_cli_in_process)  # fmt: skip
    assert_usage_error_naming(done, table)
    assert "--audit-json" in done.stderr and "--input" in done.stderr
    assert table.read_bytes() == before
    assert not store.exists(), "a clip was computed before the usage error"
    assert not (tmp_path / "out.jsonl").exists()


def test_output_that_is_the_model_is_refused(tmp_path, table):
    model = tmp_path / "model.parquet"  # a real model, under a name an output may have
    shutil.copy(choose_model(None, None).path, model)
    before = model.read_bytes()
    done = materialize(table, model, "--model-path", str(model), run=run_cli_in_process)
    assert_usage_error_naming(done, model)
    assert "--output" in done.stderr and "--model-path" in done.stderr
    assert model.read_bytes() == before


@pytest.mark.parametrize("link", ["hard", "symbolic"])
def test_output_linked_to_the_input_is_refused(tmp_path, table, link):
    output = tmp_path / "linked.jsonl"
    (os.link if link == "hard" else os.symlink)(table, output)
    before = table.read_bytes()
    done = materialize(table, output, run=run_cli_in_process)
    assert_usage_error_naming(done, output, table)
    assert table.read_bytes() == before


def test_input_reached_through_a_symlink_is_not_overwritten(tmp_path, table):
    alias = tmp_path / "alias" / "in.jsonl"
    alias.parent.symlink_to(tmp_path)
    done = materialize(alias, table, run=run_cli_in_process)
    assert_usage_error_naming(done, table, alias)


def test_results_store_holding_the_input_is_refused(tmp_path, table):
    done = materialize(
        table, tmp_path / "out.jsonl", "--results-store", str(tmp_path), run=run_cli_in_process
    )
    assert_usage_error_naming(done, tmp_path, table)


def write_manifest(path: Path, tables: list[dict]) -> Path:
    path.write_text(json.dumps({"tables": tables}))
    return path


def test_manifest_audit_that_is_its_own_input_is_refused(tmp_path, table):
    before = table.read_bytes()
    manifest = write_manifest(
        tmp_path / "batch.json",
        [{"id": "a", "input": "in.jsonl", "output": "out.jsonl", "audit_json": "in.jsonl"}],
    )
    done = run_cli_in_process("batch", "--manifest", str(manifest))
    assert_usage_error_naming(done, table)
    assert "table 'a' audit_json" in done.stderr and "table 'a' input" in done.stderr
    assert table.read_bytes() == before


def test_batch_report_that_is_the_manifest_is_refused(tmp_path, table):
    manifest = write_manifest(
        tmp_path / "batch.json", [{"id": "a", "input": "in.jsonl", "output": "out.jsonl"}]
    )
    before = manifest.read_bytes()
    done = run_cli_in_process("batch", "--manifest", str(manifest), "--report-json", str(manifest))
    assert_usage_error_naming(done, manifest)
    assert "--report-json" in done.stderr
    assert manifest.read_bytes() == before
    assert not (tmp_path / "out.jsonl").exists()


def test_one_tables_output_over_another_tables_input_is_refused(tmp_path, table):
    shutil.copy(table, tmp_path / "b.jsonl")
    before = table.read_bytes()
    manifest = write_manifest(
        tmp_path / "batch.json",
        [
            {"id": "a", "input": "in.jsonl", "output": "out.jsonl"},
            {"id": "b", "input": "b.jsonl", "output": "b-out.jsonl", "audit_json": "in.jsonl"},
        ],
    )
    done = run_cli_in_process("batch", "--manifest", str(manifest))
    assert_usage_error_naming(done, table)
    assert "table 'b' audit_json" in done.stderr and "table 'a' input" in done.stderr
    assert table.read_bytes() == before
    assert not (tmp_path / "out.jsonl").exists(), "table 'a' ran before the usage error"


def test_objects_are_compared_by_uri_never_as_local_paths(tmp_path, monkeypatch):
    """``s3://b/t.jsonl`` is one object however it is spelled, and is not the local file that
    resolving the URL as a path would give (``./s3:/b/t.jsonl``)."""
    monkeypatch.chdir(tmp_path)
    local = tmp_path / "s3:" / "b" / "t.jsonl"
    local.parent.mkdir(parents=True)
    local.write_text("{}\n")

    with pytest.raises(ConfigError, match="--output s3://b/t.jsonl is the same file as --input"):
        reject_overwrites([("--input", "s3://b/t.jsonl")], [("--output", Path("s3://b/t.jsonl"))])
    reject_overwrites([("--input", local)], [("--output", "s3://b/t.jsonl")])
    reject_overwrites(
        [("--input", "s3://b/t.jsonl")], [("--output", "out.jsonl")], [("store", local.parent)]
    )
    with pytest.raises(ConfigError, match="store s3://b is or holds --input s3://b/t.jsonl"):
        reject_overwrites([("--input", "s3://b/t.jsonl")], [], [("store", "s3://b")])


# --- a reader that has gone away ------------------------------------------------------------


@pytest.mark.parametrize("command", ["materialize", "batch"])
def test_closed_stderr_changes_nothing(tmp_path, table, command):
    """stderr is a pipe whose reader closed it before the command wrote a byte: the summary
    cannot be printed, yet the table and the audit (or report) are written and the run exits 0,
    with no "Exception ignored" at exit (that would make the exit status 120)."""
    output, audit = tmp_path / "out.jsonl", tmp_path / "audit.json"
    if command == "materialize":
        args = ["materialize", "--input", str(table), "--output", str(output),
                "--audit-json", str(audit)]  # fmt: skip
    else:
        manifest = write_manifest(
            tmp_path / "batch.json", [{"id": "a", "input": "in.jsonl", "output": "out.jsonl"}]
        )
        args = ["batch", "--manifest", str(manifest), "--report-json", str(audit)]
    process = subprocess.Popen(
        [sys.executable, "-m", "saliency_assets.cli", *args],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    process.stderr.close()
    assert process.wait(timeout=300) == 0
    assert read_jsonl(output)[0]["saliency_status"] == "ok"
    assert json.loads(audit.read_text())["summary"]["ok"] == 1


def test_stderr_piped_into_head_changes_nothing(tmp_path, clip_dir):
    """``2>&1 | head -1``: head leaves after the first line (a warning about a missing clip);
    the summary after it cannot be printed, the exit status is still the run's own (1: a row
    failed) and the audit is written."""
    table = write_jsonl(tmp_path / "in.jsonl", [{"src": "missing.mp4"}])
    output, audit = tmp_path / "out.jsonl", tmp_path / "audit.json"
    command = (
        f"{sys.executable} -m saliency_assets.cli materialize --input {table} --output {output}"
        f" --audit-json {audit} 2>&1 | head -1; exit ${{PIPESTATUS[0]}}"
    )
    done = subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=300)
    assert done.returncode == 1, done.stdout
    assert len(done.stdout.splitlines()) == 1
    assert read_jsonl(output)[0]["saliency_status"] == "missing-source"
    assert json.loads(audit.read_text())["summary"]["failed"] == 1


def test_closed_stderr_descriptor_changes_nothing(tmp_path, table):
    """Started with descriptor 2 closed (``2>&-``): the run's messages go nowhere (not onto
    stdout, which print() falls back to), and the table and audit are written."""
    output, audit = tmp_path / "out.jsonl", tmp_path / "audit.json"
    command = (
        f"{sys.executable} -m saliency_assets.cli materialize --input {table} --output {output}"
        f" --audit-json {audit} 2>&-"
    )
    done = subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and done.stdout == "", done.stdout
    assert read_jsonl(output)[0]["saliency_status"] == "ok"
    assert json.loads(audit.read_text())["summary"]["ok"] == 1


# --- full disk ------------------------------------------------------------------------------


@contextmanager
def full_folder(folder: Path):
    """A 64 KiB tmpfs at ``folder`` holding ``out.jsonl`` (mode 0640), then filled up."""
    if os.geteuid() != 0:
        pytest.skip("a full file system needs a tmpfs mount, which needs root")
    folder.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(folder)], capture_output=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        (folder / "out.jsonl").write_text('{"original": true}\n')
        (folder / "out.jsonl").chmod(0o640)
        _fill(folder / "filler")
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=True)


def _fill(path: Path) -> None:
    with path.open("wb", buffering=0) as handle:
        try:
            while True:
                handle.write(b"\0" * 4096)
        except OSError:
            pass


@pytest.mark.parametrize(
    ("written", "flag"),
    [("out.jsonl", "--output"), ("out.parquet", "--output"), ("audit.json", "--audit-json")],
)
def test_full_disk_is_one_line_naming_the_file_and_leaves_no_temp(tmp_path, table, written, flag):
    with full_folder(tmp_path / "full") as folder:
        paths = {"--output": tmp_path / "out.jsonl", "--audit-json": tmp_path / "audit.json"}
        paths[flag] = folder / written
        done = materialize(table, paths["--output"], "--audit-json", str(paths["--audit-json"]))
        assert done.returncode == 1, done.stderr
        assert TRACEBACK not in done.stderr
        failure = [line for line in done.stderr.splitlines() if "error" in line]
        assert len(failure) == 1 and str(folder / written) in failure[0], done.stderr
        assert "No space left on device" in failure[0]
        assert sorted(os.listdir(folder)) == ["filler", "out.jsonl"]
        assert (folder / "out.jsonl").read_text() == '{"original": true}\n'
        assert stat.S_IMODE((folder / "out.jsonl").stat().st_mode) == 0o640


def test_full_disk_under_a_batch_report_keeps_the_tables(tmp_path, table):
    manifest = write_manifest(
        tmp_path / "batch.json", [{"id": "a", "input": "in.jsonl", "output": "out.jsonl"}]
    )
    with full_folder(tmp_path / "full") as folder:
        report = folder / "report.md"
        done = run_cli("batch", "--manifest", str(manifest), "--report-md", str(report))
        assert done.returncode == 1, done.stderr
        assert TRACEBACK not in done.stderr
        assert f"report not written: {report}: cannot write (No space left" in done.stderr
        assert sorted(os.listdir(folder)) == ["filler", "out.jsonl"]
    assert read_jsonl(tmp_path / "out.jsonl")[0]["saliency_status"] == "ok"


# --- permissions ----------------------------------------------------------------------------


@contextmanager
def umask(mask: int):
    previous = os.umask(mask)
    try:
        yield
    finally:
        os.umask(previous)


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.parametrize("mask", [0o002, 0o027])
def test_new_outputs_follow_the_umask(tmp_path, table, mask):
    output, audit, store = tmp_path / "out.parquet", tmp_path / "audit.json", tmp_path / "store"
    with umask(mask):
        done = materialize(table, output, "--audit-json", str(audit),
                           "--results-store", str(store))  # fmt: skip
        manifest = write_manifest(
            tmp_path / "batch.json", [{"id": "a", "input": "in.jsonl", "output": "b.jsonl"}]
        )
        reports = [tmp_path / "report.json", tmp_path / "report.md"]
        batch = run_cli("batch", "--manifest", str(manifest), "--report-json", str(reports[0]),
                        "--report-md", str(reports[1]))  # fmt: skip
    assert done.returncode == 0 and batch.returncode == 0, done.stderr + batch.stderr
    parts = list(store.glob("part-*.parquet"))
    assert parts
    written = [output, audit, *parts, tmp_path / "b.jsonl", *reports]
    assert {path.name: mode_of(path) for path in written} == dict.fromkeys(
        (path.name for path in written), 0o666 & ~mask
    )


def test_a_replaced_output_keeps_its_mode(tmp_path, table):
    output, audit = tmp_path / "out.jsonl", tmp_path / "audit.json"
    for path, mode in ((output, 0o664), (audit, 0o640)):
        path.write_text("old\n")
        path.chmod(mode)
    with umask(0o077):
        done = materialize(table, output, "--audit-json", str(audit))
    assert done.returncode == 0, done.stderr
    assert read_jsonl(output)[0]["saliency_status"] == "ok"
    assert (mode_of(output), mode_of(audit)) == (0o664, 0o640)


# --- long names -----------------------------------------------------------------------------


def test_an_output_name_of_250_bytes_works(tmp_path, table):
    output = tmp_path / ("o" * 244 + ".jsonl")
    audit = tmp_path / ("a" * 245 + ".json")
    assert len(output.name.encode()) == 250 == len(audit.name.encode())
    done = materialize(table, output, "--audit-json", str(audit))
    assert done.returncode == 0, done.stderr
    assert read_jsonl(output)[0]["saliency_status"] == "ok"
    assert [name for name in os.listdir(tmp_path) if name.startswith(".")] == []
