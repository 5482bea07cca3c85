"""Long-lived worker processes that compute clips, each holding one model session.

The parent hands out one clip at a time per worker and watches the clock: a worker whose
decode overruns the decode limit (a decoder stuck inside FFmpeg cannot be interrupted from
Python), or whose clip overruns the whole-clip limit (a hung model call cannot be either), is
killed and replaced, and its clip gets ``decode-failed`` or ``model-failed`` by the phase it
was in. A worker that dies is replaced too, so one bad file never stops a run.

A worker infers the frames of its clip side by side, one single-thread inference stream per
core of its share, and folds their maps back in frame order. At native size a worker's share
is two cores (half as many processes: one set of libraries and buffers fewer, and a clip's
frames keep both cores busy to its end); at an inference size, where decoding is a large
share and a worker decodes one clip at a time, it is one. A table of a few clips (fewer than
workers) gets fewer workers with more streams each, so every core is busy; once no clip is
waiting, the busy workers split the cores between them, up to the streams they were compiled
with (nothing is rebuilt: a stream allocates its buffers only once used).

Killing a worker kills the ffmpeg processes it started too. Workers ignore Ctrl-C (the parent
hears it and stops them) and die with the forkserver they were forked from, which exits with
the parent.
"""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import signal
import time
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from pathlib import Path

from saliency_assets.core.contract.statuses import DECODE_FAILED, MODEL_FAILED
from saliency_assets.core.decode.clips import ClipSource
from saliency_assets.core.decode.sampling import sample_count
from saliency_assets.core.model.clip_saliency import (
    DECODING,
    INFERRING,
    STARTED,
    ClipJob,
    ClipResult,
    compute_clip,
)
from saliency_assets.core.model.saliency_model import SaliencyModel
from saliency_assets.core.run.forkserver import worker_context

# Grace beyond the decoder's own time limit before the parent kills a silent worker.
HARD_LIMIT_GRACE_S = 10.0
POLL_INTERVAL_S = 0.5
STOP_WAIT_S = 5.0
# Cores (inference streams) a worker takes at native size; see the module's docstring.
NATIVE_CORES_PER_WORKER = 2
_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>

ClipTask = tuple[str, ClipSource]


@dataclass
class _Worker:
    """A worker process and the clocks on its current clip.

    Decoding and inference alternate frame by frame; the decode limit counts decoding only, the
    clip limit both, so the worker reports when it starts the clip and each switch with its own
    monotonic time (one clock for all processes on Linux). A clip's clock starts when the
    worker takes it up, not when it was sent: a new worker loads its model first.
    """

    process: multiprocessing.process.BaseProcess
    connection: Connection
    task: ClipTask | None = None
    inferring: bool = False
    decode_spent: float = 0.0  # decoding time of the current clip before its latest decode phase
    decoding_since: float = 0.0
    started_at: float | None = None  # when the worker took up the current clip
    share: ctypes.c_int | None = None  # its frames at once (cores), in shared memory

    def start(self, task: ClipTask) -> None:
        self.task, self.inferring, self.started_at = task, False, None
        self.decode_spent, self.decoding_since = 0.0, time.monotonic()

    def switch(self, phase: str, at: float) -> None:
        if phase == STARTED:
            self.started_at = self.decoding_since = at
        elif phase == INFERRING and not self.inferring:
            self.decode_spent += at - self.decoding_since
        elif phase == DECODING:
            self.decoding_since = at
        self.inferring = phase == INFERRING

    def decoding_for(self, now: float) -> float:
        """Seconds the current clip has spent decoding; inference time left out."""
        return self.decode_spent + (0.0 if self.inferring else now - self.decoding_since)

    def clip_for(self, now: float) -> float:
        """Seconds since the worker took up the current clip (0 until it has)."""
        return 0.0 if self.started_at is None else now - self.started_at


class ClipWorkerPool:
    """Computes clips in ``jobs`` processes on ``cores`` cores (default: one per process); use
    as a context manager. :func:`worker_count` is the number of processes the engine runs."""

    def __init__(self, job: ClipJob, jobs: int, cores: int | None = None) -> None:
        self.job = job
        self.jobs = max(1, jobs)
        self.cores = max(self.jobs, cores or 1)
        # A worker's streams are its share with every worker busy (a clip has no more frames
        # to spread than it samples): a stream more for the tail alone costs each worker
        # ~0.15 s of compile at start, more than the tail of a long run loses (measured at 288).
        share = -(-self.cores // self.jobs)
        self.streams = min(share, sample_count(job.plan)) if job is not None else 1
        self._context = worker_context()
        self._workers: list[_Worker] = []

    def __enter__(self) -> ClipWorkerPool:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *exc_info: object) -> None:
        # Unwinding (an interrupt, an error): a busy worker would not read a stop request
        # until its clip is done, so every worker is killed at once.
        self.close(kill=exc_type is not None)

    def run(self, tasks: Collection[ClipTask]) -> Iterator[tuple[str, ClipResult]]:
        """Yield ``(clip_key, result)`` as clips finish, in completion order.

        A task is taken from ``tasks`` only when a worker is free for it (the engine claims a
        clip in a shared store as it is taken, so other runs can take the rest)."""
        upcoming = iter(tasks)
        most = min(self.jobs, len(tasks))
        exhausted = False
        while True:
            exhausted = self._hand_out(upcoming, most) or exhausted
            if not any(worker.task for worker in self._workers):
                return
            self._share_cores(tail=exhausted)
            yield from self._collect()

    def close(self, kill: bool = False) -> None:
        """Stop every worker: asked to exit when idle, killed (with its ffmpeg) otherwise."""
        for worker in self._workers:
            _stop(worker, kill=kill or worker.task is not None)
        self._workers = []

    def _hand_out(self, upcoming: Iterator[ClipTask], most: int) -> bool:
        """Give each free worker its next task; start workers (up to ``most``) only for tasks
        actually taken, so a run whose clips all turn out to be stored starts none. True once
        ``upcoming`` has run out (the run's tail: no clip waits for a worker)."""
        for worker in self._workers:
            if worker.task is None:
                if (task := next(upcoming, None)) is None:
                    return True
                self._assign(worker, task)
        while len(self._workers) < most:
            if (task := next(upcoming, None)) is None:
                return True
            self._workers.append(self._spawn())
            self._assign(self._workers[-1], task)
        return False

    def _spawn(self) -> _Worker:
        parent_end, child_end = self._context.Pipe()
        share = self._context.Value("i", 1, lock=False)
        process = self._context.Process(
            target=_worker_main,
            args=(child_end, self.job, share, self.streams),
            daemon=True,
            name="saliency-worker",
        )
        process.start()
        child_end.close()
        return _Worker(process, parent_end, share=share)

    def _share_cores(self, tail: bool) -> None:
        """The workers split the cores; in the tail (no clip waiting), only the busy ones."""
        sharing = [worker for worker in self._workers if worker.task] if tail else self._workers
        for worker, cores in zip(sharing, core_shares(self.cores, len(sharing)), strict=True):
            worker.share.value = cores

    def _assign(self, worker: _Worker, task: ClipTask) -> None:
        worker.connection.send(task)
        worker.start(task)

    def _collect(self) -> Iterator[tuple[str, ClipResult]]:
        busy = {worker.connection: worker for worker in self._workers if worker.task}
        for connection in wait(list(busy), timeout=POLL_INTERVAL_S):
            worker = busy[connection]
            outcome = self._receive(worker)
            if outcome is not None:
                yield outcome
        yield from self._reap_overdue()

    def _receive(self, worker: _Worker) -> tuple[str, ClipResult] | None:
        try:
            message = worker.connection.recv()
        except (EOFError, OSError):
            return self._replace(worker, _died_result(worker))
        kind, payload = message
        if kind != "done":
            worker.switch(kind, payload)
            return None
        key, _source = worker.task
        worker.task = None
        return key, payload

    def _reap_overdue(self) -> Iterator[tuple[str, ClipResult]]:
        now = time.monotonic()
        for worker in list(self._workers):
            if worker.task:
                overrun = self._overrun(worker, now)
                if overrun is not None:
                    yield self._replace(worker, overrun)

    def _overrun(self, worker: _Worker, now: float) -> ClipResult | None:
        """The failure of a clip past one of its limits, named by phase and limit; else None."""
        decode_limit, clip_limit = self.job.decode_timeout, self.job.clip_timeout
        decode_overrun = decode_limit is not None and worker.decoding_for(now) > (
            decode_limit + HARD_LIMIT_GRACE_S
        )
        if decode_overrun:
            return ClipResult(
                DECODE_FAILED,
                detail=f"decode did not finish within {decode_limit:g} s (decode_timeout); "
                "the worker was stopped",
            )
        if clip_limit is not None and worker.clip_for(now) > clip_limit:
            status, what = (
                (MODEL_FAILED, "inference") if worker.inferring else (DECODE_FAILED, "decode")
            )
            # "did not finish" marks the failure as transient: the results store keeps none.
            return ClipResult(
                status,
                detail=f"{what} did not finish within the clip's {clip_limit:g} s limit "
                "(decoding and inference together); the worker was stopped",
            )
        return None

    def _replace(self, worker: _Worker, result: ClipResult) -> tuple[str, ClipResult]:
        key, _source = worker.task
        _stop(worker, kill=True)
        self._workers[self._workers.index(worker)] = self._spawn()
        return key, result


def worker_count(job: ClipJob, cores: int) -> int:
    """The worker processes a run on ``cores`` cores starts (see the module's docstring)."""
    if job.plan.inference_size is None:
        return max(1, -(-cores // NATIVE_CORES_PER_WORKER))
    return max(1, cores)


def core_shares(cores: int, workers: int) -> list[int]:
    """``cores`` split as evenly as possible over ``workers``, at least one each."""
    if workers == 0:
        return []
    base, extra = divmod(cores, workers)
    return [max(1, base + (index < extra)) for index in range(workers)]


def _died_result(worker: _Worker) -> ClipResult:
    worker.process.join(timeout=5)
    code = worker.process.exitcode
    status = MODEL_FAILED if worker.inferring else DECODE_FAILED
    return ClipResult(status, detail=f"worker process died (exit code {code}) on this clip")


def _stop(worker: _Worker, kill: bool = False) -> None:
    if worker.process.is_alive() and not kill:
        try:
            worker.connection.send(None)
            worker.process.join(timeout=STOP_WAIT_S)
        except OSError:
            pass
    if worker.process.is_alive():
        _kill_with_children(worker.process.pid)
        worker.process.join(timeout=STOP_WAIT_S)
    worker.connection.close()


def _kill_with_children(pid: int) -> None:
    """SIGKILL a worker and the ffmpeg processes it started, each with its process group (what
    a wrapper script started). The worker is stopped first, so it cannot start another between
    the listing of its children and the kill."""
    try:
        os.kill(pid, signal.SIGSTOP)
    except ProcessLookupError:
        return
    for child in _children(pid):
        try:
            if os.getpgid(child) == child:
                os.killpg(child, signal.SIGKILL)
            else:
                os.kill(child, signal.SIGKILL)
        except ProcessLookupError:
            pass
    try:  # it may have been killed and reaped meanwhile (a timeout and a stop at once)
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _children(pid: int) -> list[int]:
    """The processes whose parent is ``pid``, from /proc."""
    children = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:  # gone meanwhile
            continue
        parent = stat[stat.rindex(")") + 2 :].split()[1]  # after "pid (comm) state"
        if int(parent) == pid:
            children.append(int(entry))
    return children


def _worker_main(connection: Connection, job: ClipJob, share: ctypes.c_int, streams: int) -> None:
    _tie_to_parent()
    os.environ.update(dict(job.object_store_env))
    model = SaliencyModel(job.model_path, job.providers, streams=streams)
    try:
        _serve(connection, job, model, lambda: share.value)
    except _ParentGone:
        return


class _ParentGone(Exception):
    """The pipe to the parent is closed: nobody is waiting for results any more."""


def _serve(
    connection: Connection, job: ClipJob, model: SaliencyModel, share: Callable[[], int]
) -> None:
    def send(message: object) -> None:
        try:
            connection.send(message)
        except OSError as error:
            raise _ParentGone from error

    def report(phase: str) -> None:
        send((phase, time.monotonic()))

    while True:
        try:
            task = connection.recv()
        except (EOFError, OSError) as error:
            raise _ParentGone from error
        if task is None:
            return
        _key, source = task
        report(STARTED)
        send(("done", compute_clip(source, job, model, on_phase=report, frames_at_once=share)))


def _tie_to_parent() -> None:
    """Ctrl-C ignored (the parent hears it too and stops the workers, with no traceback from
    here), and death with the forkserver, hence with the parent however it ends."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    forkserver = os.getppid()
    try:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):  # not Linux: the parent's own stop still applies
        pass
    if os.getppid() != forkserver:  # it died before the request took effect
        os._exit(0)
