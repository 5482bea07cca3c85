"""Long-lived worker processes that compute clips, each holding one model session.

The parent hands out one clip at a time per worker and watches the clock: a worker whose
decode overruns the time limit (a decoder stuck inside FFmpeg cannot be interrupted from
Python) is killed and replaced, and its clip gets ``decode-failed``. A worker that dies is
replaced too, so one bad file never stops a run.
"""

from __future__ import annotations

import multiprocessing
import time
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait

from saliency_assets.core.clip_saliency import (
    DECODING,
    INFERRING,
    ClipJob,
    ClipResult,
    compute_clip,
)
from saliency_assets.core.clips import ClipSource
from saliency_assets.core.forkserver import worker_context
from saliency_assets.core.model import SaliencyModel
from saliency_assets.core.statuses import DECODE_FAILED, MODEL_FAILED

# Grace beyond the decoder's own time limit before the parent kills a silent worker.
HARD_LIMIT_GRACE_S = 10.0
POLL_INTERVAL_S = 0.5

ClipTask = tuple[str, ClipSource]


@dataclass
class _Worker:
    """A worker process and the clock on its current clip's decoding.

    Decoding and inference alternate frame by frame; only decoding counts towards the hard
    limit, so the worker reports each switch with its own monotonic time (one clock for all
    processes on Linux).
    """

    process: multiprocessing.process.BaseProcess
    connection: Connection
    task: ClipTask | None = None
    inferring: bool = False
    decode_spent: float = 0.0  # decoding time of the current clip before its latest decode phase
    decoding_since: float = 0.0

    def start(self, task: ClipTask) -> None:
        self.task, self.inferring = task, False
        self.decode_spent, self.decoding_since = 0.0, time.monotonic()

    def switch(self, phase: str, at: float) -> None:
        if phase == INFERRING and not self.inferring:
            self.decode_spent += at - self.decoding_since
        elif phase == DECODING:
            self.decoding_since = at
        self.inferring = phase == INFERRING

    def decoding_for(self, now: float) -> float:
        """Seconds the current clip has spent decoding; inference time left out."""
        return self.decode_spent + (0.0 if self.inferring else now - self.decoding_since)


class ClipWorkerPool:
    """Computes clips in ``jobs`` processes; use as a context manager."""

    def __init__(self, job: ClipJob, jobs: int) -> None:
        self.job = job
        self.jobs = max(1, jobs)
        self._context = worker_context()
        self._workers: list[_Worker] = []

    def __enter__(self) -> ClipWorkerPool:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def run(self, tasks: Collection[ClipTask]) -> Iterator[tuple[str, ClipResult]]:
        """Yield ``(clip_key, result)`` as clips finish, in completion order.

        A task is taken from ``tasks`` only when a worker is free for it (the engine claims a
        clip in a shared store as it is taken, so other runs can take the rest)."""
        upcoming = iter(tasks)
        self._start_workers(min(self.jobs, len(tasks)))
        while True:
            for worker in self._workers:
                if worker.task is None and (task := next(upcoming, None)) is not None:
                    self._assign(worker, task)
            if not any(worker.task for worker in self._workers):
                return
            yield from self._collect()

    def close(self) -> None:
        for worker in self._workers:
            _stop(worker)
        self._workers = []

    def _start_workers(self, count: int) -> None:
        while len(self._workers) < count:
            self._workers.append(self._spawn())

    def _spawn(self) -> _Worker:
        parent_end, child_end = self._context.Pipe()
        process = self._context.Process(
            target=_worker_main, args=(child_end, self.job), daemon=True, name="saliency-worker"
        )
        process.start()
        child_end.close()
        return _Worker(process, parent_end)

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
        limit = self.job.decode_timeout
        if limit is None:
            return
        now = time.monotonic()
        for worker in list(self._workers):
            overdue = worker.decoding_for(now) > limit + HARD_LIMIT_GRACE_S
            if worker.task and overdue:
                detail = (
                    f"decode did not finish within {limit:g} s "
                    f"(decode_timeout); the worker was stopped"
                )
                yield self._replace(worker, ClipResult(DECODE_FAILED, detail=detail))

    def _replace(self, worker: _Worker, result: ClipResult) -> tuple[str, ClipResult]:
        key, _source = worker.task
        _stop(worker, kill=True)
        self._workers[self._workers.index(worker)] = self._spawn()
        return key, result


def _died_result(worker: _Worker) -> ClipResult:
    worker.process.join(timeout=5)
    code = worker.process.exitcode
    status = MODEL_FAILED if worker.inferring else DECODE_FAILED
    return ClipResult(status, detail=f"worker process died (exit code {code}) on this clip")


def _stop(worker: _Worker, kill: bool = False) -> None:
    if worker.process.is_alive() and not kill:
        try:
            worker.connection.send(None)
            worker.process.join(timeout=5)
        except (OSError, BrokenPipeError):
            pass
    if worker.process.is_alive():
        worker.process.kill()
        worker.process.join(timeout=5)
    worker.connection.close()


def _worker_main(connection: Connection, job: ClipJob) -> None:
    model = SaliencyModel(job.model_path, job.providers)
    while True:
        task = connection.recv()
        if task is None:
            return
        _key, source = task

        def report(phase: str) -> None:
            connection.send((phase, time.monotonic()))

        result = compute_clip(source, job, model, on_phase=report)
        connection.send(("done", result))
