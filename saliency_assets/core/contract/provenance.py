"""``run_provenance``: the reference's ``ai-run-provenance-v1`` record, plus what it lacked.

Kept: ``schema``, ``entrypoint``, ``argv``, ``args``, ``inputs``, ``outputs`` and the path
description ``{path, exists, kind, sha256?}``. Added: the model actually used (id, path and
sha256, also for the bundled default), package versions, start and finish timestamps.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import platform
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

from saliency_assets.core.model.saliency_model import ModelChoice, sha256_file
from saliency_assets.core.tables import filesystems

PROVENANCE_SCHEMA = "ai-run-provenance-v1"
PACKAGE_ROOT = Path(__file__).resolve().parents[3]
# The distributions that install the ``onnxruntime`` module: the CPU build and the GPU build.
ONNXRUNTIME_DISTRIBUTIONS = ("onnxruntime", "onnxruntime-gpu", "onnxruntime-openvino")


def describe_path(path: Path | str | None) -> dict[str, Any] | None:
    """``{path, exists, kind, sha256?}``; files are hashed in full."""
    if path is None:
        return None
    if filesystems.is_object(path):
        return _describe_object(path)
    path = Path(path)
    description: dict[str, Any] = {"path": _display_path(path)}
    if path.is_file():
        description.update(exists=True, kind="file", sha256=sha256_file(path))
    elif path.is_dir():
        description.update(exists=True, kind="directory")
    else:
        description.update(exists=False, kind="missing")
    return description


def _describe_object(path: Path | str) -> dict[str, Any]:
    """The same description for an ``s3://`` object; hashed as it streams in."""
    uri = filesystems.object_uri(path)
    kind = filesystems.stat(uri).kind
    if kind != "file":
        return {"path": uri, "exists": kind == "directory", "kind": kind}
    return {"path": uri, "exists": True, "kind": "file", "sha256": sha256_file(uri)}


def build_run_provenance(
    entrypoint: str,
    argv: list[str],
    args: dict[str, Any],
    inputs: dict[str, Any],
    outputs: dict[str, Any],
    model: ModelChoice,
    started_at: dt.datetime,
    all_models: Sequence[ModelChoice] = (),
) -> dict[str, Any]:
    """The provenance record; ``args`` are normalised to JSON values. ``model`` is the run's
    (first) model; a run of several models lists each in ``models`` too."""
    record = {
        "schema": PROVENANCE_SCHEMA,
        "entrypoint": describe_path(PACKAGE_ROOT / entrypoint),
        "argv": [str(item) for item in argv],
        "args": {name: json_value(value) for name, value in sorted(args.items())},
        "inputs": inputs,
        "outputs": outputs,
        "model": _model_record(model),
        "versions": package_versions(),
        "started_at": _timestamp(started_at),
        "finished_at": _timestamp(utc_now()),
    }
    if len(all_models) > 1:
        record["models"] = [_model_record(each) for each in all_models]
    return record


def describe_models(models: Sequence[ModelChoice]) -> dict[str, Any]:
    """The provenance inputs naming the model files: ``model_path``, or one per model of
    several, ``model_path__<model id>``."""
    if len(models) == 1:
        return {"model_path": describe_path(models[0].path)}
    return {f"model_path__{model.model_id}": describe_path(model.path) for model in models}


def _model_record(model: ModelChoice) -> dict[str, str]:
    return {"id": model.model_id, "path": _display_path(model.path), "sha256": model.sha256}


def package_versions() -> dict[str, str]:
    import av
    import numpy

    libavcodec = ".".join(str(part) for part in av.library_versions.get("libavcodec", ()))
    return {
        "saliency-assets": _distribution_version("saliency-assets"),
        "python": platform.python_version(),
        "numpy": numpy.__version__,
        "onnxruntime": _onnxruntime_version(),
        "av": av.__version__,
        "libavcodec": libavcodec,
    }


def json_value(value: Any) -> Any:
    """Paths to strings, tuples to lists, other objects to ``str()``; JSON values as they are."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, (list, tuple)):
        return [json_value(item) for item in value]
    if isinstance(value, dict):
        return {str(key): json_value(item) for key, item in value.items()}
    return str(value)


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _timestamp(moment: dt.datetime) -> str:
    return moment.isoformat(timespec="seconds")


def _display_path(path: Path) -> str:
    """Repo-relative POSIX path when the file lies under the package's checkout, else as given."""
    try:
        return path.resolve().relative_to(PACKAGE_ROOT).as_posix()
    except (ValueError, OSError):
        return str(path)


def _onnxruntime_version() -> str:
    """The installed onnxruntime build's version, read from its metadata: importing it would
    load its 30 MB library into a parent process that never runs a session."""
    for name in ONNXRUNTIME_DISTRIBUTIONS:
        with contextlib.suppress(metadata.PackageNotFoundError):
            return metadata.version(name)
    return "not installed"


def _distribution_version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        from saliency_assets import __version__

        return __version__
