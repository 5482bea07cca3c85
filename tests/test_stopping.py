"""Stopping a run: a hung model call, and SIGINT / SIGTERM / SIGHUP / Ctrl-C mid-clip.

Through the real command on real clips: a model built to hang on big frames (a real onnxruntime
call that does not return), and a real ffmpeg slowed to the clip's frame rate (``-re``) so a
decode is in progress when the signal lands. The command runs under a subreaper, which sees
every process it started, however deep, and reports any that outlive it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import psutil
import pyarrow.parquet as pq
import pytest
from support.bounded import TRACEBACK, run_command
from support.clips import ffmpeg_exe, make_clip
from support.slow_models import write_hanging_model

from saliency_assets.core.decode.clips import ClipSource, SamplingPlan
from saliency_assets.core.model.clip_saliency import ClipJob
from saliency_assets.core.model.saliency_model import ENGINE_NOTICE
from saliency_assets.core.run.workers import ClipWorkerPool
from saliency_assets.interrupts import STOP_SIGNALS, Interrupted, stop_signals_raise
from saliency_assets.models import DEFAULT_MODEL_PATH

REAPER = Path(__file__).parent / "support" / "reaper.py"
OUTLIVE_WAIT_S = 30.0  # how long the reaper waits for leftovers before it names them
BUSY_WITHIN_S = 120.0
LONG_CLIP_FRAMES = 1500  # 60 s at 25 fps, read in real time: outlasts OUTLIVE_WAIT_S
EXIT_CODES = {"SIGINT": 130, "SIGTERM": 143, "SIGHUP": 129}


@dataclass(frozen=True)
class Corpus:
    folder: Path
    hanging_model: Path
    slow_ffmpeg: Path  # the real ffmpeg, reading its input at the clip's frame rate
    hung_ffprobe: Path  # a wrapper script whose child never answers (a stalled mount, say)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Corpus:
    folder = tmp_path_factory.mktemp("stopping")
    make_clip(folder / "small.mp4", 32, 32, 4)  # the hanging model answers at once at 32 rows
    make_clip(folder / "big.mp4", 64, 48, 4)  # ... and never at 48 (padded to 64)
    make_clip(folder / "long.mp4", 64, 48, LONG_CLIP_FRAMES)
    slow_ffmpeg = folder / "slow-ffmpeg"
    slow_ffmpeg.write_text(f'#!/bin/sh\nexec "{ffmpeg_exe()}" -re "$@"\n')
    slow_ffmpeg.chmod(0o755)
    hung_ffprobe = folder / "hung-ffprobe"
    hung_ffprobe.write_text("#!/bin/sh\nsleep 600\n")
    hung_ffprobe.chmod(0o755)
    hanging_model = write_hanging_model(folder / "hanging.onnx")
    return Corpus(folder, hanging_model, slow_ffmpeg, hung_ffprobe)


def table(folder: Path, *clips: str) -> Path:
    path = folder / f"{'-'.join(Path(clip).stem for clip in clips)}.jsonl"
    path.write_text("".join(json.dumps({"src": clip}) + "\n" for clip in clips))
    return path


def materialize_args(corpus: Corpus, input_table: Path, output: Path, *extra: str) -> list[str]:
    return [
        "materialize",
        *("--input", str(input_table), "--output", str(output), "--root", str(corpus.folder)),
        *("--path-column", "src", "--jobs", "1"),
        *extra,
    ]


def read_rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_a_hung_model_call_fails_its_clip_and_the_run_goes_on(corpus, tmp_path):
    """The whole-clip limit (5 x --decode-timeout) cuts off inference that never returns: the
    clip is model-failed with the phase and the limit, its worker is replaced, and the next
    clip is computed by a new one."""
    output = tmp_path / "out.jsonl"
    args = materialize_args(
        corpus,
        table(corpus.folder, "big.mp4", "small.mp4"),
        output,
        *("--model-path", str(corpus.hanging_model), "--decode-timeout", "1"),
        *("--results-store", str(tmp_path / "store")),
    )
    run = run_command(args, timeout_s=120)
    assert run.returncode == 1, run.describe()
    assert TRACEBACK not in run.stderr
    hung, answered = read_rows(output)
    assert hung["saliency_status"] == "model-failed"
    assert hung["saliency_error"] == (
        "inference did not finish within the clip's 5 s limit "
        "(decoding and inference together); the worker was stopped"
    )
    assert answered["saliency_status"] == "ok"
    # A hang may not recur (a GPU hiccup): the results store keeps only the clip that finished.
    stored = [pq.read_table(part)["clip_key"] for part in (tmp_path / "store").glob("*.parquet")]
    assert [key for keys in stored for key in keys.to_pylist()] == [
        str(corpus.folder / "small.mp4")
    ]


def test_a_clip_past_its_limit_while_decoding_is_decode_failed_and_its_ffmpeg_killed(corpus):
    """The whole-clip limit names the phase it caught: here ffmpeg is still decoding (no
    decode limit is set), so the clip is decode-failed, and the killed worker's ffmpeg dies
    with it; the next clip gets a new worker."""
    job = ClipJob(
        plan=SamplingPlan(sampling="spread"),
        temporal_aggregator="mean",
        ema_alpha=0.6,
        model_path=DEFAULT_MODEL_PATH,
        providers=("CPUExecutionProvider",),
        ffmpeg_bin=str(corpus.slow_ffmpeg),
        clip_timeout=2.0,
    )
    long_clip = corpus.folder / "long.mp4"
    tasks = [("long", ClipSource(long_clip)), ("small", ClipSource(corpus.folder / "small.mp4"))]
    with ClipWorkerPool(job, 1) as pool:
        results = dict(pool.run(tasks))
    assert results["long"].status == "decode-failed"
    assert results["long"].detail == (
        "decode did not finish within the clip's 2 s limit "
        "(decoding and inference together); the worker was stopped"
    )
    assert results["small"].ok
    assert ffmpeg_processes_reading(long_clip) == []


def ffmpeg_processes_reading(clip: Path) -> list[psutil.Process]:
    """Live ffmpeg processes with ``clip`` on their command line (zombies left to be reaped
    do not count), after up to OUTLIVE_WAIT_S for them to go."""
    deadline = time.monotonic() + OUTLIVE_WAIT_S
    while True:
        alive = []
        for process in psutil.process_iter(["name", "cmdline", "status"]):
            info = process.info
            reading = any(str(clip) in arg for arg in info["cmdline"] or [])
            if reading and info["status"] != psutil.STATUS_ZOMBIE:
                alive.append(process)
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(0.05)


def test_a_hung_probe_is_cut_off_with_everything_it_started(corpus, tmp_path):
    """A probing binary that never answers is killed at the decode limit together with its
    own children; the clip is decode-failed and nothing outlives the command."""
    output = tmp_path / "out.jsonl"
    flags = ["--ffmpeg-bin", ffmpeg_exe(), "--ffprobe-bin", str(corpus.hung_ffprobe)]
    flags += ["--decode-timeout", "1", "--results-store", "none"]
    args = materialize_args(corpus, table(corpus.folder, "small.mp4"), output, *flags)
    done = run_under_reaper(args, tmp_path / "stderr.txt")
    assert done.outlived == []
    assert done.exit_code == 1, done.stderr
    assert TRACEBACK not in done.stderr
    [row] = read_rows(output)
    assert row["saliency_status"] == "decode-failed"
    assert "decode timed out after 1 s" in row["saliency_error"]


@dataclass
class Stopped:
    exit_code: int
    outlived: list[str]
    stderr: str


def run_and_stop(args: list[str], busy, how: str, stderr_path: Path) -> Stopped:
    """Run the command under the reaper; once ``busy(command, descendants)`` holds, send
    ``how`` (a signal name, or ``ctrl-c``: SIGINT to the whole process group, as a terminal
    does)."""

    def stop(pid: int) -> None:
        _wait_until_busy(psutil.Process(pid), busy)
        if how == "ctrl-c":
            os.killpg(pid, signal.SIGINT)
        else:
            os.kill(pid, getattr(signal, how))

    return run_under_reaper(args, stderr_path, stop)


def run_under_reaper(args: list[str], stderr_path: Path, act=None) -> Stopped:
    """Run the command under the reaper, calling ``act(pid)`` once it has started."""
    command = [sys.executable, "-m", "saliency_assets.cli", *args]
    reaper = subprocess.Popen(
        [sys.executable, str(REAPER), str(stderr_path), str(OUTLIVE_WAIT_S), "--", *command],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        pid = int(reaper.stdout.readline())
        if act is not None:
            act(pid)
        report = json.loads(reaper.communicate(timeout=BUSY_WITHIN_S + OUTLIVE_WAIT_S)[0])
    finally:
        if reaper.poll() is None:
            reaper.kill()
            reaper.wait()
    return Stopped(report["exit"], report["outlived"], stderr_path.read_text())


def _wait_until_busy(command: psutil.Process, busy) -> None:
    deadline = time.monotonic() + BUSY_WITHIN_S
    while True:
        assert command.is_running(), "the command ended before it could be stopped"
        try:
            if busy(command, command.children(recursive=True)):
                return
        except psutil.NoSuchProcess:
            pass
        assert time.monotonic() < deadline, "the command never got busy"
        time.sleep(0.05)


def ffmpeg_reading(clip: str):
    def busy(_command: psutil.Process, descendants: list[psutil.Process]) -> bool:
        return any(
            process.name().startswith("ffmpeg") and any(clip in arg for arg in process.cmdline())
            for process in descendants
        )

    return busy


def probing(_command: psutil.Process, descendants: list[psutil.Process]) -> bool:
    return any(process.name() == "sleep" for process in descendants)


def worker_inferring(command: psutil.Process, descendants: list[psutil.Process]) -> bool:
    """A worker (a grandchild: forked by the forkserver) has spent a second in the hung call."""
    workers = [process for process in descendants if process.ppid() != command.pid]
    return any(process.cpu_times().user > 1.0 for process in workers)


STOP_CASES = [
    ("SIGTERM", "ffmpeg"),
    ("SIGINT", "ffmpeg"),
    ("SIGHUP", "ffmpeg"),
    ("ctrl-c", "ffmpeg"),
    ("SIGTERM", "model"),
    ("ctrl-c", "model"),
    ("SIGTERM", "probe"),
]


@pytest.mark.parametrize(("how", "busy_in"), STOP_CASES, ids=["-".join(c) for c in STOP_CASES])
def test_a_stopped_run_says_so_in_one_line_and_leaves_no_process(corpus, tmp_path, how, busy_in):
    """Stopped mid-clip with --decode-timeout 0 (no limit would ever end a leftover): one line,
    exit 128 + the signal, no traceback from any process, before or after the command exits,
    and no worker, forkserver, resource tracker or ffmpeg left running."""
    if busy_in == "ffmpeg":
        clip, busy = "long.mp4", ffmpeg_reading("long.mp4")
        extra = ["--ffmpeg-bin", str(corpus.slow_ffmpeg), "--sampling", "spread"]
    elif busy_in == "probe":
        clip, busy = "small.mp4", probing
        extra = ["--ffmpeg-bin", ffmpeg_exe(), "--ffprobe-bin", str(corpus.hung_ffprobe)]
    else:
        clip, busy = "big.mp4", worker_inferring
        extra = ["--model-path", str(corpus.hanging_model)]
    args = materialize_args(
        corpus,
        table(corpus.folder, clip),
        tmp_path / "out.jsonl",
        *extra,
        *("--decode-timeout", "0", "--results-store", str(tmp_path / "store")),
    )
    stopped = run_and_stop(args, busy, how, tmp_path / "stderr.txt")
    name = "SIGINT" if how == "ctrl-c" else how
    assert stopped.outlived == []
    assert without_engine_notice(stopped.stderr) == f"saliency-assets: interrupted ({name})\n"
    assert stopped.exit_code == EXIT_CODES[name]
    assert not (tmp_path / "out.jsonl").exists()


def without_engine_notice(stderr: str) -> str:
    """The command's stderr less the line, written at start, that names the engine it chose."""
    return "".join(line for line in stderr.splitlines(True) if not line.startswith(ENGINE_NOTICE))


def test_a_stopped_batch_says_so_in_one_line_and_leaves_no_process(corpus, tmp_path):
    """``batch`` stops the same way: the interrupt is not taken for a table's error."""
    manifest = tmp_path / "manifest.json"
    table_spec = {
        "id": "long",
        "input": str(table(corpus.folder, "long.mp4")),
        "output": str(tmp_path / "out.jsonl"),
    }
    settings = {"path_column": "src", "root": str(corpus.folder), "jobs": 1}
    settings |= {
        "sampling": "spread",
        "decode_timeout": None,
        "ffmpeg_bin": str(corpus.slow_ffmpeg),
    }
    manifest.write_text(json.dumps({"defaults": settings, "tables": [table_spec]}))
    args = ["batch", "--manifest", str(manifest), "--report-json", str(tmp_path / "report.json")]
    stopped = run_and_stop(args, ffmpeg_reading("long.mp4"), "SIGTERM", tmp_path / "err.txt")
    assert stopped.outlived == []
    assert without_engine_notice(stopped.stderr) == "saliency-assets: interrupted (SIGTERM)\n"
    assert stopped.exit_code == 143
    assert not (tmp_path / "report.json").exists()


def test_clips_finished_before_sigterm_are_reused_by_the_rerun(corpus, tmp_path):
    """SIGTERM while the second clip decodes: the first clip's result reaches the results store
    on the way out, and the rerun takes it from there instead of computing it again."""
    store = tmp_path / "store"
    input_table = table(corpus.folder, "small.mp4", "long.mp4")
    settings = ("--sampling", "spread", "--results-store", str(store))
    slow = [*settings, "--ffmpeg-bin", str(corpus.slow_ffmpeg)]
    args = materialize_args(corpus, input_table, tmp_path / "stopped.jsonl", *slow)
    stopped = run_and_stop(args, ffmpeg_reading("long.mp4"), "SIGTERM", tmp_path / "err.txt")
    assert stopped.exit_code == 143, stopped.stderr

    audit = tmp_path / "audit.json"
    rerun_settings = (*settings, "--ffmpeg-bin", ffmpeg_exe(), "--audit-json", str(audit))
    rerun = run_command(
        materialize_args(corpus, input_table, tmp_path / "out.jsonl", *rerun_settings)
    )
    assert rerun.returncode == 0, rerun.describe()
    record = json.loads(audit.read_text())
    assert (record["clips"], record["reused_clips"]) == (2, 1)


@pytest.fixture
def saved_signal_handlers():
    """The test process's stop-signal handlers, put back after the test."""
    before = {signum: signal.getsignal(signum) for signum in STOP_SIGNALS}
    yield before
    for signum, handler in before.items():
        signal.signal(signum, handler)


def test_a_stop_signal_inside_the_block_raises_interrupted_and_the_rest_are_ignored(
    saved_signal_handlers,
):
    with pytest.raises(Interrupted) as raised, stop_signals_raise():
        os.kill(os.getpid(), signal.SIGHUP)
        time.sleep(5)  # the handler raises long before
    assert (raised.value.signal_name, raised.value.exit_code) == ("SIGHUP", 129)
    # The process is on its way out: a second signal must not cut its clean-up short.
    assert {signal.getsignal(signum) for signum in STOP_SIGNALS} == {signal.SIG_IGN}


def test_the_handlers_before_the_block_come_back_after_it(saved_signal_handlers):
    with stop_signals_raise():
        assert signal.getsignal(signal.SIGTERM) != saved_signal_handlers[signal.SIGTERM]
    assert {s: signal.getsignal(s) for s in STOP_SIGNALS} == saved_signal_handlers
