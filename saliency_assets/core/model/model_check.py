"""The model file's check before any clip is decoded, run where it leaves nothing behind.

The check opens an onnxruntime session (:func:`.saliency_model.validate_model_file`). Imported
once, onnxruntime's libraries stay mapped for the life of the process: about 35 MB in a
command's parent, which runs no session itself and waits on its workers for the whole run. So a
process that has not loaded onnxruntime checks in a forked child that exits once it has
answered; the answer (the engine, or the ConfigError's message) comes back over a pipe. A
process with other threads (a Dagster run) or with onnxruntime already loaded checks in place:
forking it could copy a lock another thread holds, and the libraries are paid for anyway.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import sys
import threading
from multiprocessing.connection import Connection
from pathlib import Path

from saliency_assets.core.contract.errors import ConfigError
from saliency_assets.core.model.saliency_model import validate_model_file


def check_model_file(path: Path, providers: tuple[str, ...]) -> str:
    """:func:`validate_model_file`'s answer (the engine that runs ``path``), or its ConfigError,
    computed in a short-lived child where that is safe."""
    if not _forks_safely():
        return validate_model_file(path, providers)
    context = multiprocessing.get_context("fork")
    receiver, sender = context.Pipe(duplex=False)
    child = context.Process(
        target=_answer, args=(sender, path, providers), daemon=True, name="saliency-model-check"
    )
    child.start()
    sender.close()
    try:
        kind, message = receiver.recv()
    except EOFError:
        kind, message = "died", ""
    finally:
        receiver.close()
        child.join()
    if kind == "died":
        message = (
            f"model file {path} could not be checked: the checking process ended without an "
            f"answer (exit code {child.exitcode})"
        )
    if kind != "engine":
        raise ConfigError(message)
    return message


def _forks_safely() -> bool:
    return (
        hasattr(os, "fork") and "onnxruntime" not in sys.modules and threading.active_count() == 1
    )


def _answer(sender: Connection, path: Path, providers: tuple[str, ...]) -> None:
    # The parent hears Ctrl-C and stops; a SIGTERM or SIGHUP ends the child at once, not
    # through the parent's handlers (inherited by the fork), which would print a traceback.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, signal.SIG_DFL)
    try:
        answer = ("engine", validate_model_file(path, providers))
    except ConfigError as error:
        answer = ("error", str(error))
    sender.send(answer)
    sender.close()
