"""The process the clip workers fork from, and starting it before it is needed.

Workers fork from a forkserver that has imported the clip code once (numpy, PyAV: about half a
second) and, where it is installed, the OpenVINO runtime that ``auto`` runs on (~0.15 s more),
so each fork is immediate and the parent's state (open tables, threads) never leaks into a
worker. Started early, those imports run on another core while the parent still imports its
own modules and reads the table. (onnxruntime is imported by a worker that runs on it.)
"""

from __future__ import annotations

import importlib.util
import multiprocessing
import multiprocessing.context
import multiprocessing.forkserver

WORKER_MODULES = ["saliency_assets.core.model.clip_saliency"]
# OpenVINO as the workers import it (without its package's telemetry: see the module).
OPENVINO_MODULE = "saliency_assets.core.model.openvino_runtime"


def worker_context() -> multiprocessing.context.ForkServerContext:
    """The multiprocessing context worker processes are started from."""
    context = multiprocessing.get_context("forkserver")
    engine = [OPENVINO_MODULE] if importlib.util.find_spec("openvino") is not None else []
    context.set_forkserver_preload(WORKER_MODULES + engine)
    return context


def start_forkserver() -> None:
    """Start the forkserver now (a no-op if it runs); it imports the clip code in the background."""
    worker_context()
    multiprocessing.forkserver.ensure_running()
