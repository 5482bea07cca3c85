"""Clips computed on an existing Ray cluster: the engine's runner seam, backed by Ray actors.

Each actor holds one onnxruntime session, created once, and computes one clip at a time with the
same ``compute_clip`` the local worker processes call, so a clip is decoded on the node that
computes it (clip paths must be readable there: a shared file system or ``s3://``). The model
file travels with the run through Ray's object store. Results come back as they finish.

A clip whose actor dies (its node was lost, or the process crashed) or raises is given to another
actor; after ``ACTOR_DEATHS_PER_CLIP`` such failures it is ``decode-failed`` as the local pool
reports a dead worker (a transient failure, never stored). A decode that overruns
``decode_timeout`` stops its actor, as locally. Each clip is yielded exactly once, so the engine
stores it once.

Actors start only for clips actually taken from the engine (which skips those found stored as
it offers them): a run with nothing to compute neither joins the cluster nor loads a model
there, and no run starts more actors than it has clips to compute.

``ray`` is imported only here, and only when a run names a cluster (the ``[ray]`` extra).
"""

from __future__ import annotations

import hashlib
import importlib.util
import itertools
import socket
import tempfile
import time
from collections import Counter, deque
from collections.abc import Collection, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from saliency_assets.core.contract.config import MaterializeConfig
from saliency_assets.core.contract.errors import ConfigError
from saliency_assets.core.contract.statuses import DECODE_FAILED
from saliency_assets.core.decode.clips import ClipSource
from saliency_assets.core.model.clip_saliency import INFERRING, ClipJob, ClipResult, compute_clip
from saliency_assets.core.model.saliency_model import ModelChoice, SaliencyModel
from saliency_assets.core.tables.atomic import atomic_write
from saliency_assets.core.tables.filesystems import aws_environment

ACTOR_DEATHS_PER_CLIP = 3
# As the local pool: grace beyond the decoder's own limit before its actor is stopped.
HARD_LIMIT_GRACE_S = 10.0
POLL_INTERVAL_S = 0.5
CONNECT_TIMEOUT_S = 10.0
# How long dispatch waits for every actor to start before going on with those that have.
ACTOR_START_WAIT_S = 30.0
# How long a run waits, with no live actor, for the cluster to offer one before giving up.
NO_CAPACITY_TIMEOUT_S = 300.0
GPU_PROVIDERS = ("CUDAExecutionProvider", "TensorrtExecutionProvider")
# Actors sharing one GPU: each decodes on its own CPU while the others' frames are inferred, so
# a GPU node is not held to one core's decoding speed.
ACTORS_PER_GPU = 4

ClipTask = tuple[str, ClipSource]


def check_ray_installed() -> None:
    """ConfigError, before any work, when a run names a Ray cluster but Ray is not installed."""
    if importlib.util.find_spec("ray") is None:
        raise ConfigError(
            "ray_address (--ray-address) needs Ray, which is not installed here: "
            "pip install 'saliency-assets[ray]'"
        )


class RayRunner:
    """A ``ClipRunner`` over actors on the cluster at ``config.ray_address``.

    ``config.jobs`` caps the number of actors; by default there is one per CPU of the cluster
    (``ACTORS_PER_GPU`` per GPU when the providers include CUDA), and never more than clips
    taken. ``stats`` counts what happened.
    """

    def __init__(self, config: MaterializeConfig, model: ModelChoice) -> None:
        self.address = config.ray_address
        self.job = ClipJob.from_config(config, model.path)
        self.model = model
        self.max_actors = config.jobs
        self.stats = RayRunStats()

    def __call__(self, tasks: Collection[ClipTask]) -> Iterator[tuple[str, ClipResult]]:
        """Results of ``tasks`` as they finish; a task is taken only when an actor is free
        for it or is started for it (``len(tasks)`` is an upper bound on what is taken)."""
        upcoming = iter(tasks)
        first = next(upcoming, None)
        if first is None:  # nothing to compute (all stored): the cluster is not even joined
            return
        connect(self.address)
        most = _pool_size(self.job, self.max_actors, len(tasks), self.address)
        pool = _ActorPool(self.job, self.model, self.stats, most)
        try:
            yield from pool.run(itertools.chain([first], upcoming))
        finally:
            pool.close()


@dataclass
class RayRunStats:
    """Clips computed per Ray node id, clips given to another actor after theirs died, and
    actors started (replacements included)."""

    clips_by_node: Counter[str] = field(default_factory=Counter)
    retried_clips: int = 0
    actors_started: int = 0


def connect(address: str) -> None:
    """Join the cluster at ``address`` once per process (raises ConnectionError if none)."""
    import ray

    if ray.is_initialized():
        return
    _check_reachable(address)
    ray.init(address=address, logging_level="ERROR", log_to_driver=False)


def _check_reachable(address: str) -> None:
    """A ``host:port`` nobody listens on fails at once; ``ray.init`` would retry for minutes."""
    host, _, port = address.rpartition(":")
    if "://" in address or not host or not port.isdigit():
        return  # "auto", "ray://...": left to ray.init
    try:
        socket.create_connection((host, int(port)), timeout=CONNECT_TIMEOUT_S).close()
    except OSError as error:
        raise ConnectionError(
            f"no Ray cluster answers at {address} ({error.strerror or error}); check "
            "--ray-address / ray_address, or start one with `ray start --head`"
        ) from None


def uses_gpu(providers: tuple[str, ...]) -> bool:
    return any(provider in GPU_PROVIDERS for provider in providers)


class ClipActor:
    """One model session on one Ray worker; computes one clip per call."""

    def __init__(self, job: ClipJob, model_bytes: bytes, model_sha256: str) -> None:
        import ray

        local_model = _node_local_model(model_bytes, model_sha256)
        self.job = replace(job, model_path=local_model)
        self.model = SaliencyModel(local_model, job.providers)
        self.node_id = ray.get_runtime_context().get_node_id()
        self.clock = _DecodeClock()

    def ready(self) -> str:
        return self.node_id

    def compute(self, source: ClipSource) -> tuple[ClipResult, str]:
        self.clock.start()
        result = compute_clip(source, self.job, self.model, on_phase=self.clock.switch)
        return result, self.node_id

    def decoding_for(self) -> float:
        """Seconds the current clip has spent decoding (inference left out)."""
        return self.clock.decoding_for()


@dataclass
class _DecodeClock:
    """The current clip's decoding time; inference time does not count towards the limit."""

    spent: float = 0.0
    since: float = field(default_factory=time.monotonic)
    inferring: bool = False

    def start(self) -> None:
        self.spent, self.since, self.inferring = 0.0, time.monotonic(), False

    def switch(self, phase: str) -> None:
        now = time.monotonic()
        if phase == INFERRING and not self.inferring:
            self.spent += now - self.since
        elif phase != INFERRING:
            self.since = now
        self.inferring = phase == INFERRING

    def decoding_for(self) -> float:
        return self.spent + (0.0 if self.inferring else time.monotonic() - self.since)


@dataclass
class _InFlight:
    actor: Any
    task: ClipTask
    started: float


class _ActorPool:
    """Up to ``most`` actors, each starting, idle or busy with one clip. An actor is started
    only for a clip taken and waiting for one, so dead ones are replaced only while clips
    wait."""

    def __init__(self, job: ClipJob, model: ModelChoice, stats: RayRunStats, most: int) -> None:
        import ray

        self.job = job
        self.stats = stats
        self.most = most
        self.model_ref = ray.put(Path(model.path).read_bytes())
        self.model_sha256 = model.sha256
        self.actor_class = ray.remote(ClipActor).options(**_actor_options(job))
        self.starting: dict[Any, Any] = {}  # ready() ref -> actor
        self.idle: deque[Any] = deque()
        self.busy: dict[Any, _InFlight] = {}  # compute() ref -> what it computes
        self.deaths: Counter[str] = Counter()
        self.alive_since = time.monotonic()

    def run(self, upcoming: Iterator[ClipTask]) -> Iterator[tuple[str, ClipResult]]:
        pending: deque[ClipTask] = deque()  # taken (or to retry), waiting for an actor
        exhausted = self._hand_out(upcoming, pending)
        self._await_actors()
        while True:
            exhausted = self._hand_out(upcoming, pending) or exhausted
            if exhausted and not pending and not self.busy:
                return
            yield from self._collect(pending)
            yield from self._reap_overdue()
            self._check_capacity(len(pending))

    def close(self) -> None:
        import ray

        actors = [*self.starting.values(), *self.idle, *(f.actor for f in self.busy.values())]
        for actor in actors:
            ray.kill(actor, no_restart=True)
        self.starting, self.idle, self.busy = {}, deque(), {}

    def _hand_out(self, upcoming: Iterator[ClipTask], pending: deque[ClipTask]) -> bool:
        """Give each idle actor a clip, then start actors (up to ``most``) for clips that no
        starting actor will take; a clip is taken from ``upcoming`` only for an actor. True
        once ``upcoming`` has run out."""
        while self.idle:
            task = pending.popleft() if pending else next(upcoming, None)
            if task is None:
                return True
            self._submit(self.idle.popleft(), task)
        while self._actors() < self.most:
            if len(pending) <= len(self.starting):
                task = next(upcoming, None)
                if task is None:
                    return True
                pending.append(task)
            self._start_actor()
        return False

    def _actors(self) -> int:
        return len(self.starting) + len(self.idle) + len(self.busy)

    def _await_actors(self) -> None:
        """Dispatch starts once every actor is up (or after ``ACTOR_START_WAIT_S``, with those
        that are), so clips spread over the nodes from the first one on rather than all going
        to whichever actor happened to start first."""
        import ray

        deadline = time.monotonic() + ACTOR_START_WAIT_S
        while self.starting and (not self.idle or time.monotonic() < deadline):
            waiting = list(self.starting)
            ready, _ = ray.wait(waiting, num_returns=len(waiting), timeout=POLL_INTERVAL_S)
            for ref in ready:
                self._started(ref)
            self._check_capacity(len(self.starting))

    def _start_actor(self) -> None:
        actor = self.actor_class.remote(self.job, self.model_ref, self.model_sha256)
        self.starting[actor.ready.remote()] = actor
        self.stats.actors_started += 1

    def _submit(self, actor: Any, task: ClipTask) -> None:
        _key, source = task
        self.busy[actor.compute.remote(source)] = _InFlight(actor, task, time.monotonic())

    def _collect(self, pending: deque[ClipTask]) -> Iterator[tuple[str, ClipResult]]:
        import ray

        waiting = [*self.starting, *self.busy]
        if not waiting:
            time.sleep(POLL_INTERVAL_S)
            return
        ready, _ = ray.wait(waiting, num_returns=1, timeout=POLL_INTERVAL_S)
        if ready:  # and every other one finished by now
            ready, _ = ray.wait(waiting, num_returns=len(waiting), timeout=0)
        for ref in ready:
            if ref in self.starting:
                self._started(ref)
            else:
                yield from self._finished(ref, pending)

    def _started(self, ref: Any) -> None:
        import ray

        actor = self.starting.pop(ref)
        try:
            ray.get(ref)
        except ray.exceptions.RayActorError as error:
            if error.actor_init_failed:  # the model or the package fails to load: every actor will
                raise ConnectionError(f"clip actors cannot start: {_cause(error)}") from None
            return  # its node went away while it was starting: _hand_out starts another
        self.idle.append(actor)
        self.alive_since = time.monotonic()

    def _finished(self, ref: Any, pending: deque[ClipTask]) -> Iterator[tuple[str, ClipResult]]:
        import ray

        flight = self.busy.pop(ref)
        key, _source = flight.task
        try:
            result, node_id = ray.get(ref)
        except (ray.exceptions.RayActorError, ray.exceptions.ObjectLostError) as error:
            yield from self._retry_or_fail(flight.task, error, pending)
            return
        except ray.exceptions.RayTaskError as error:  # where a local worker process would die
            self.idle.append(flight.actor)
            yield from self._retry_or_fail(flight.task, error, pending)
            return
        self.idle.append(flight.actor)
        self.stats.clips_by_node[node_id] += 1
        yield key, result

    def _retry_or_fail(
        self, task: ClipTask, error: Exception, pending: deque[ClipTask]
    ) -> Iterator[tuple[str, ClipResult]]:
        """The clip goes to the next free actor, unless it has now failed its actor too often;
        then it fails as a dead local worker's clip does (a transient failure: not stored)."""
        key, _source = task
        self.deaths[key] += 1
        if self.deaths[key] < ACTOR_DEATHS_PER_CLIP:
            self.stats.retried_clips += 1
            pending.appendleft(task)
            return
        detail = (
            f"worker process died or raised on this clip {self.deaths[key]} times "
            f"(last: {_cause(error)})"
        )
        yield key, ClipResult(DECODE_FAILED, detail=detail)

    def _reap_overdue(self) -> Iterator[tuple[str, ClipResult]]:
        limit = self.job.decode_timeout
        if limit is None:
            return
        now = time.monotonic()
        for ref, flight in list(self.busy.items()):
            if now - flight.started > limit + HARD_LIMIT_GRACE_S and self._overdue(flight, limit):
                yield self._stop_overdue(ref, flight, limit)

    def _overdue(self, flight: _InFlight, limit: float) -> bool:
        import ray

        try:
            decoding = ray.get(flight.actor.decoding_for.remote(), timeout=POLL_INTERVAL_S * 4)
        except ray.exceptions.GetTimeoutError:
            return True  # not even answering: stuck
        except ray.exceptions.RayActorError:
            return False  # dead: its compute ref reports it
        return decoding > limit + HARD_LIMIT_GRACE_S

    def _stop_overdue(self, ref: Any, flight: _InFlight, limit: float) -> tuple[str, ClipResult]:
        import ray

        del self.busy[ref]
        ray.kill(flight.actor, no_restart=True)
        detail = (
            f"decode did not finish within {limit:g} s (decode_timeout); the worker was stopped"
        )
        return flight.task[0], ClipResult(DECODE_FAILED, detail=detail)

    def _check_capacity(self, clips_left: int) -> None:
        if self.idle or self.busy or not clips_left:
            self.alive_since = time.monotonic()
            return
        if time.monotonic() - self.alive_since > NO_CAPACITY_TIMEOUT_S:
            raise ConnectionError(
                f"no clip actor could start on the Ray cluster for {NO_CAPACITY_TIMEOUT_S:g} s "
                f"({clips_left} clips left); check that its nodes are up and can import "
                "saliency_assets"
            )


def _pool_size(job: ClipJob, max_actors: int | None, tasks: int, address: str) -> int:
    import ray

    resource = "GPU" if uses_gpu(job.providers) else "CPU"
    available = int(ray.cluster_resources().get(resource, 0))
    if resource == "GPU":
        available *= ACTORS_PER_GPU
    if available < 1:
        raise ConnectionError(f"the Ray cluster at {address} has no {resource} for clip actors")
    return max(1, min(available, max_actors or available, tasks))


def _actor_options(job: ClipJob) -> dict[str, Any]:
    """One CPU per actor (and a share of a GPU for CUDA providers), spread over the nodes;
    threaded, so ``decoding_for`` is answered while a clip computes. Restarts are ours, not
    Ray's. The AWS variables set here go with the actors, to reach the run's object store."""
    options: dict[str, Any] = {
        "num_cpus": 1,
        "max_restarts": 0,
        "max_concurrency": 2,
        "scheduling_strategy": "SPREAD",
    }
    if uses_gpu(job.providers):
        options["num_gpus"] = 1 / ACTORS_PER_GPU
    if aws_environment():
        options["runtime_env"] = {"env_vars": aws_environment()}
    return options


def _node_local_model(model_bytes: bytes, model_sha256: str) -> Path:
    """The run's model as a file on this node, shared by its actors and checked by hash."""
    if hashlib.sha256(model_bytes).hexdigest() != model_sha256:
        raise ValueError("the model received from the driver does not match its sha256")
    path = Path(tempfile.gettempdir()) / "saliency-assets-models" / f"{model_sha256}.onnx"
    if not path.exists():  # actors starting together each write it whole; the last rename wins
        atomic_write(path, lambda handle: handle.write(model_bytes))
    return path


def _cause(error: BaseException) -> str:
    """The last line of a remote error: its exception type and message."""
    lines = [line for line in str(error).splitlines() if line.strip()]
    return lines[-1].strip() if lines else type(error).__name__
