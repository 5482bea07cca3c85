"""The materializer's flow: rows -> unique clips -> clip results -> rows enriched.

Rows are reduced to unique clips first; clips are computed by a runner (worker processes by
default); results are joined back onto every row that names the clip. Failures found while
resolving a row (no such file, no geometry) are recorded per row and never reach a worker.
"""

from __future__ import annotations

import dataclasses
import sys
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, TextIO

from saliency_assets.core.contract.config import MaterializeConfig
from saliency_assets.core.contract.statuses import MISSING_SOURCE, OK, SKIPPED_EXISTING
from saliency_assets.core.decode.clips import ClipSource
from saliency_assets.core.decode.decoding import check_binary
from saliency_assets.core.model.clip_saliency import ClipJob, ClipResult
from saliency_assets.core.model.model_check import check_model_file
from saliency_assets.core.model.saliency_model import ModelChoice, choose_model, engine_notice
from saliency_assets.core.run.lookahead import looked_up
from saliency_assets.core.run.progress import Progress
from saliency_assets.core.run.results_store import ClipKeys, ClipResultStore, ResultKey
from saliency_assets.core.run.workers import ClipWorkerPool, worker_count
from saliency_assets.core.tables.rows import (
    PLAIN_VALUES,
    RowMetadata,
    ValueColumns,
    apply_result,
    has_existing_saliency,
    mark_skipped,
)
from saliency_assets.core.tables.sources import Unresolved, clip_key, resolve_clip

# A runner gets the clips as a sized iterable: each is claimed (in a shared store) as the runner
# takes it, so a runner that takes clips as workers free up leaves more to other runs.
ClipRunner = Callable[[Iterable[tuple[str, ClipSource]]], Iterator[tuple[str, ClipResult]]]
FLUSH_EVERY_RESULTS = 16
FLUSH_EVERY_S = 2.0


@dataclass
class MaterializeSummary:
    """Row counters: ``total = ok + skipped_existing + failed``."""

    total: int = 0
    ok: int = 0
    skipped_existing: int = 0
    failed: int = 0
    statuses: Counter = field(default_factory=Counter)

    def to_json(self) -> dict[str, int]:
        return {
            "total": self.total,
            "ok": self.ok,
            "skipped_existing": self.skipped_existing,
            "failed": self.failed,
        }

    def count(self, status: str) -> None:
        self.total += 1
        self.statuses[status] += 1
        if status == OK:
            self.ok += 1
        elif status == SKIPPED_EXISTING:
            self.skipped_existing += 1
        else:
            self.failed += 1


@dataclass
class MaterializeOutcome:
    rows: list[dict[str, Any]]
    summary: MaterializeSummary
    clips: int
    reused_clips: int = 0
    unstored_clips: int = 0
    clips_by_transfer: dict[str, int] = field(default_factory=dict)  # of the ok clips
    row_statuses: list[str] = field(default_factory=list)  # each row's status, in row order


def prepare_model(config: MaterializeConfig) -> ModelChoice:
    """Everything that can be wrong before any clip is decoded: model file, binaries."""
    for binary in (config.ffmpeg_bin, config.ffprobe_bin):
        if binary:
            check_binary(binary)
    if config.ray_address:
        from saliency_assets.core.run.ray_runner import check_ray_installed

        check_ray_installed()
    model = choose_model(config.model_path, config.model_id)
    return dataclasses.replace(model, engine=check_model_file(model.path, config.providers))


def materialize_rows(
    rows: Iterable[dict[str, Any]],
    config: MaterializeConfig,
    model: ModelChoice,
    runner: ClipRunner | None = None,
    store: ClipResultStore | None = None,
    log: TextIO = sys.stderr,
    values: ValueColumns = PLAIN_VALUES,
) -> MaterializeOutcome:
    """Enrich copies of ``rows``; the input rows are not modified.

    With a ``store``, clips already computed under the same key are taken from it and new
    results are saved to it as they complete. ``values`` names the two value columns (one
    model's own when a table is enriched with several).
    """
    enriched = [dict(row) for row in rows]
    plan = _plan_rows(enriched, config, log, (values,))
    results = dict(plan.failures)
    computed = compute_clips(plan.clips, config, model, runner, store, log)
    results.update(computed.results)
    metadata = RowMetadata.from_config(config, model.model_id)
    summary, statuses = _join_results(enriched, plan, results, config, metadata, values)
    _warn_if_all_missing(summary, config, log)
    ok_results = (result for result in computed.results.values() if result.ok)
    by_transfer = Counter(result.transfer or "unknown" for result in ok_results)
    return MaterializeOutcome(
        enriched,
        summary,
        len(plan.clips),
        computed.reused,
        computed.unstored,
        dict(sorted(by_transfer.items())),
        statuses,
    )


@dataclass
class ComputedClips:
    results: dict[str, ClipResult]
    reused: int
    unstored: int = 0  # computed results the store could not keep
    keys: dict[str, ResultKey] = field(default_factory=dict)  # clips readable now, with a store


def compute_clips(
    clips: dict[str, ClipSource],
    config: MaterializeConfig,
    model: ModelChoice,
    runner: ClipRunner | None = None,
    store: ClipResultStore | None = None,
    log: TextIO = sys.stderr,
) -> ComputedClips:
    """Results for every clip: reused from ``store`` where present, else computed by ``runner``.

    Clips are fingerprinted and looked up in the store as the runner takes them (a thread reads
    ahead), so hashing overlaps the workers' compute. A clip another run is computing (claimed
    in a shared store) is left to it: this run computes the rest, then waits for those claims
    and takes the stored results (or computes them, if the other run died first)."""
    keys = ClipKeys(config, model.sha256, log) if store is not None else None
    results: dict[str, ClipResult] = {}
    reused = 0
    pending = list(clips.items())
    runner = runner or _default_runner(config, model, log)
    saver = _StoreSaver(store, keys.known if keys else {})
    progress = Progress(len(pending), stream=log)
    try:
        while pending:
            claimed = _ClaimedTasks(pending, keys, store, progress)
            for key, result in runner(claimed):
                results[key] = result
                saver.add(key, result)
                progress.advance(failed=not result.ok)
            saver.flush()  # releases this run's claims before it waits on others'
            found = claimed.stored | _results_of_other_runs(store, keys, claimed.deferred)
            results.update(found)
            reused += len(found)
            for _ in range(len(found) - len(claimed.stored)):
                progress.advance()
            pending = [task for task in claimed.deferred if task[0] not in found]
    finally:
        saver.close()  # also when an exception (an interrupt) unwinds: keep what finished
        progress.finish()
        if keys is not None:
            keys.close()
    return ComputedClips(results, reused, saver.unstored, dict(keys.known) if keys else {})


def _results_of_other_runs(
    store: ClipResultStore | None,
    keys: ClipKeys | None,
    deferred: list[tuple[str, ClipSource]],
) -> dict[str, ClipResult]:
    """Wait until the runs that claimed the ``deferred`` clips are done with them (stored, or
    died) and return the results they stored."""
    if store is None or keys is None or not deferred:
        return {}
    deferred_keys = {key: keys.known[key] for key, _source in deferred}
    store.wait_for_claims(deferred_keys.values())
    stored = store.lookup_many(deferred_keys.values())
    return {
        key: stored[result_key] for key, result_key in deferred_keys.items() if result_key in stored
    }


class _ClaimedTasks:
    """The tasks this run may compute, claimed from the store as the runner takes them. Those
    found in the store are set aside in ``stored``, those another run has claimed in
    ``deferred``. Sized like the tasks it offers (an upper bound on what it yields)."""

    def __init__(
        self,
        tasks: list[tuple[str, ClipSource]],
        keys: ClipKeys | None,
        store: ClipResultStore | None,
        progress: Progress,
    ) -> None:
        self.tasks, self.keys, self.store, self.progress = tasks, keys, store, progress
        self.stored: dict[str, ClipResult] = {}
        self.deferred: list[tuple[str, ClipSource]] = []

    def __len__(self) -> int:
        return len(self.tasks)

    def __iter__(self) -> Iterator[tuple[str, ClipSource]]:
        self.deferred = []
        for key, source, stored in looked_up(self.tasks, self.keys, self.store):
            if stored is not None:
                self.stored[key] = stored
                self.progress.advance()
                continue
            result_key = self.keys.known.get(key) if self.keys is not None else None
            if self.store is None or result_key is None or self.store.claim(result_key):
                yield key, source
            else:
                self.deferred.append((key, source))


class _StoreSaver:
    """Buffers new results and writes them to the store in batches: at once when
    FLUSH_EVERY_RESULTS are waiting, else by a timer thread every FLUSH_EVERY_S, so a finished
    clip is on disk within seconds even while the next clip takes minutes."""

    def __init__(self, store: ClipResultStore | None, keys: dict[str, ResultKey]) -> None:
        self.store, self.keys = store, keys
        self.buffer: list[tuple[ResultKey, ClipResult]] = []
        self.unstored = 0
        self.lock = threading.Lock()  # one writer at a time, in the order results arrived
        self.closing = threading.Event()
        self.timer = threading.Thread(target=self._flush_periodically, daemon=True)
        if store is not None:
            self.timer.start()

    def add(self, key: str, result: ClipResult) -> None:
        if self.store is None or key not in self.keys:
            return
        with self.lock:
            self.buffer.append((self.keys[key], result))
            full = len(self.buffer) >= FLUSH_EVERY_RESULTS
        if full:
            self.flush()

    def flush(self) -> None:
        with self.lock:
            batch, self.buffer = self.buffer, []
            if batch:
                self.unstored += self.store.save(batch)
                self.store.release(key for key, _result in batch)

    def close(self) -> None:
        self.closing.set()
        if self.timer.is_alive():
            self.timer.join()
        self.flush()

    def _flush_periodically(self) -> None:
        while not self.closing.wait(FLUSH_EVERY_S):
            self.flush()


@dataclass
class _RowPlan:
    row_keys: list[str | None]  # None: skipped row
    clips: dict[str, ClipSource]
    failures: dict[str, ClipResult]


def unique_clips(
    rows: Iterable[dict[str, Any]],
    config: MaterializeConfig,
    values: Sequence[ValueColumns] = (PLAIN_VALUES,),
) -> dict[str, ClipSource]:
    """The unique clips a table's rows need computed, by clip key, in first-seen order: a row
    counts unless it already holds the values of every model (``values``, one per model)."""
    return _plan_rows(list(rows), config, None, values).clips


def _plan_rows(
    rows: list[dict[str, Any]],
    config: MaterializeConfig,
    log: TextIO | None,
    values: Sequence[ValueColumns],
) -> _RowPlan:
    plan = _RowPlan([], {}, {})
    warned = False
    for index, row in enumerate(rows):
        if not config.overwrite and all(has_existing_saliency(row, each) for each in values):
            plan.row_keys.append(None)
            continue
        if not warned and log is not None and config.path_column not in row:
            _warn_missing_path_column(row, config, log)
            warned = True
        plan.row_keys.append(_plan_row(index, row, config, plan))
    return plan


def _plan_row(index: int, row: dict[str, Any], config: MaterializeConfig, plan: _RowPlan) -> str:
    resolved = resolve_clip(row, config)
    if isinstance(resolved, Unresolved):
        key = f"row:{index}"
        plan.failures[key] = ClipResult(resolved.status, detail=resolved.detail)
        return key
    key = clip_key(resolved)
    plan.clips.setdefault(key, resolved)
    return key


def _join_results(
    rows: list[dict[str, Any]],
    plan: _RowPlan,
    results: dict[str, ClipResult],
    config: MaterializeConfig,
    metadata: RowMetadata,
    values: ValueColumns,
) -> tuple[MaterializeSummary, list[str]]:
    summary = MaterializeSummary()
    statuses = []
    for row, key in zip(rows, plan.row_keys, strict=True):
        if key is None:
            mark_skipped(row, config)
            status = SKIPPED_EXISTING
        else:
            result = results[key]
            apply_result(row, result, config, metadata, values)
            status = result.status
        summary.count(status)
        statuses.append(status)
    return summary, statuses


def _default_runner(config: MaterializeConfig, model: ModelChoice, log: TextIO) -> ClipRunner:
    """Local worker processes, or the Ray cluster the config names."""
    if config.ray_address:
        from saliency_assets.core.run.ray_runner import RayRunner  # ray is an optional extra

        return RayRunner(config, model)
    return _pool_runner(config, model, log)


def _pool_runner(config: MaterializeConfig, model: ModelChoice, log: TextIO) -> ClipRunner:
    job = ClipJob.from_config(config, model.path)
    notice = engine_notice(config.providers, model.engine) if model.engine else None

    def run(tasks: list[tuple[str, ClipSource]]) -> Iterator[tuple[str, ClipResult]]:
        if not tasks:
            return
        if notice:  # said once there is work, so a usage error stays one line
            print(notice, file=log)
        cores = config.effective_jobs
        with ClipWorkerPool(job, min(worker_count(job, cores), len(tasks)), cores) as pool:
            yield from pool.run(tasks)

    return run


def _warn_missing_path_column(row: dict[str, Any], config: MaterializeConfig, log: TextIO) -> None:
    print(
        f"saliency materialize: WARNING — path_column={config.path_column!r} not found in row; "
        f"available columns: {sorted(row)}. Set path_column (--path-column or the manifest key) "
        "to the column that holds the clip path.",
        file=log,
    )


def _warn_if_all_missing(
    summary: MaterializeSummary, config: MaterializeConfig, log: TextIO
) -> None:
    if summary.failed and summary.statuses[MISSING_SOURCE] == summary.failed:
        print(
            f"saliency materialize: WARNING — all {summary.failed} failures have status "
            f"'missing-source'. Check path_column={config.path_column!r} and "
            f"root={str(config.root) if config.root else None!r}.",
            file=log,
        )
