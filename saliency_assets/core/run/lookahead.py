"""Clips fingerprinted and looked up in the results store ahead of the runner that takes them.

A thread in the parent hashes while the workers compute, instead of every clip first: the
first worker starts after one fingerprint, and lookups are batched as they go.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterator

from saliency_assets.core.decode.clips import ClipSource
from saliency_assets.core.model.clip_saliency import ClipResult
from saliency_assets.core.run.results_store import ClipKeys, ClipResultStore

# Store lookups are batched as clips are fingerprinted; hashing runs at most LOOK_AHEAD clips
# ahead of the runner (enough to keep workers fed, few enough to stay in the page cache).
LOOKUP_BATCH = 64
LOOKUP_BATCH_S = 0.5
LOOK_AHEAD = 128
OFFER_POLL_S = 0.1

_LookedUp = tuple[str, ClipSource, ClipResult | None]
_END = object()


def looked_up(
    tasks: list[tuple[str, ClipSource]], keys: ClipKeys | None, store: ClipResultStore | None
) -> Iterator[_LookedUp]:
    """``tasks`` with their stored result (None: none, or no store). A thread fingerprints and
    looks up ahead of the consumer, a batch at a time, so that the parent's hashing overlaps
    the workers' compute instead of preceding it."""
    if store is None or keys is None:
        yield from ((key, source, None) for key, source in tasks)
        return
    ahead: queue.Queue = queue.Queue(maxsize=LOOK_AHEAD)
    stop = threading.Event()
    thread = threading.Thread(
        target=_look_up_ahead, args=(tasks, keys, store, ahead, stop), daemon=True
    )
    thread.start()
    try:
        while (item := ahead.get()) is not _END:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()  # the consumer stopped early (an interrupt): the thread gives up its put
        thread.join()


def _look_up_ahead(
    tasks: list[tuple[str, ClipSource]],
    keys: ClipKeys,
    store: ClipResultStore,
    ahead: queue.Queue,
    stop: threading.Event,
) -> None:
    """Fingerprint ``tasks`` in order and offer them with any stored result, looked up in
    batches: a batch closes after LOOKUP_BATCH clips or LOOKUP_BATCH_S of hashing, and the
    first after one clip, so the first worker starts at once."""
    batch: list[tuple[str, ClipSource]] = []
    opened = time.monotonic()
    try:
        for index, (key, source) in enumerate(tasks):
            keys.key_of(key, source)
            batch.append((key, source))
            if (
                index == 0
                or len(batch) >= LOOKUP_BATCH
                or time.monotonic() - opened >= LOOKUP_BATCH_S
            ):
                if not _offer(_with_stored(batch, keys, store), ahead, stop):
                    return
                batch, opened = [], time.monotonic()
        _offer([*_with_stored(batch, keys, store), _END], ahead, stop)
    except BaseException as error:  # reraised in the consumer, where the runner can see it
        _offer([error], ahead, stop)


def _with_stored(
    batch: list[tuple[str, ClipSource]], keys: ClipKeys, store: ClipResultStore
) -> list[_LookedUp]:
    result_keys = [keys.known[key] for key, _source in batch if key in keys.known]
    stored = store.lookup_many(result_keys) if result_keys else {}
    return [
        (key, source, stored.get(keys.known[key]) if key in keys.known else None)
        for key, source in batch
    ]


def _offer(items: list, ahead: queue.Queue, stop: threading.Event) -> bool:
    """Put ``items`` on ``ahead`` unless the consumer has stopped; whether it has not."""
    for item in items:
        while True:
            if stop.is_set():
                return False
            try:
                ahead.put(item, timeout=OFFER_POLL_S)
                break
            except queue.Full:
                continue
    return True
