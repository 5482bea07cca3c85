"""The process the clip workers fork from, and starting it before it is needed.

Workers fork from a forkserver that has imported the clip code once (numpy, PyAV, onnxruntime:
about half a second), so each fork is immediate and the parent's state (open tables, threads)
never leaks into a worker. Started early, that import runs on another core while the parent
still imports its own modules and reads the table.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.context
import multiprocessing.forkserver

WORKER_MODULES = ["saliency_assets.core.model.clip_saliency"]


def worker_context() -> multiprocessing.context.ForkServerContext:
    """The multiprocessing context worker processes are started from."""
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(WORKER_MODULES)
    return context


def start_forkserver() -> None:
    """Start the forkserver now (a no-op if it runs); it imports the clip code in the background."""
    worker_context()
    multiprocessing.forkserver.ensure_running()
