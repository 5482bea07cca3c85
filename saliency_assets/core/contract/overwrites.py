"""Refuse, before any work, a run whose outputs would write over its inputs or each other.

"The same file" is decided after symlinks and hard links: the device and inode when the file
exists (as ``os.path.samefile`` does), else the resolved path. An ``s3://`` object is the same
as another only when their URIs are equal (as strings: a URL is never resolved on the local file
system), and is never a local file. A results store is a folder of part files: it must not be
an input or an output, nor hold an input (compaction deletes parts).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Hashable
from pathlib import Path

from saliency_assets.core.contract.config import MaterializeConfig, results_store_scheme
from saliency_assets.core.contract.errors import ConfigError
from saliency_assets.core.run.results_store import default_store_dir
from saliency_assets.core.tables import filesystems

# A file the run reads or writes, with the flag or manifest key that names it (None: not given).
LabelledPath = tuple[str, Path | None]
# How a setting is named in messages: "--model-path" on the command line, "table 'a'
# model_path" in a manifest.
Naming = Callable[[str], str]


def reject_overwrites(
    inputs: list[LabelledPath],
    outputs: list[LabelledPath],
    stores: list[LabelledPath] = (),
) -> None:
    """ConfigError naming both files when an output is an input or another output, or a
    results store is an input or an output or holds an input. Paths that are None are skipped."""
    inputs, outputs = _given(inputs), _given(outputs)
    read = {}
    for label, path in inputs:
        read.setdefault(file_identity(path), (label, path))
    written: dict[Hashable, LabelledPath] = {}
    for label, path in outputs:
        identity = file_identity(path)
        if identity in written:
            raise ConfigError(
                f"{written[identity][0]} and {label} are the same file {_shown(path)}"
            )
        if identity in read:
            input_label, input_path = read[identity]
            raise ConfigError(
                f"{label} {_shown(path)} is the same file as {input_label} {_shown(input_path)}; "
                "writing it would destroy the input"
            )
        written[identity] = (label, path)
    for label, store in stores:
        _reject_store_clash(label, store, inputs, [*read.values(), *written.values()])


def file_identity(path: Path) -> Hashable:
    """Equal for two paths exactly when they name the same file, through any link."""
    uri = filesystems.object_uri(path)
    if uri is not None:
        return ("object", uri)
    try:
        status = os.stat(path)
    except OSError:  # not there (yet): only its resolved path can be compared
        return os.path.realpath(path)
    return status.st_dev, status.st_ino


def config_inputs(config: MaterializeConfig, model_path: Path | None, name: Naming) -> list:
    """The files one table's settings read besides its table: the model and the binaries."""
    inputs = [] if model_path is None else [(name("model_path"), Path(model_path))]
    for key in ("ffmpeg_bin", "ffprobe_bin"):
        binary = getattr(config, key)
        found = shutil.which(binary) if binary else None
        if found:
            inputs.append((name(key), Path(found)))
    return inputs


def config_stores(config: MaterializeConfig, name: Naming) -> list[LabelledPath]:
    if config.results_store == "none" or results_store_scheme(config.results_store):
        return []
    if config.results_store == "default":
        return [(name("results_store"), default_store_dir())]
    return [(name("results_store"), Path(config.results_store))]


def _given(paths: list[LabelledPath]) -> list[LabelledPath]:
    return [(label, path) for label, path in paths if path is not None]


def _reject_store_clash(
    label: str, store: Path, inputs: list[LabelledPath], files: list[LabelledPath]
) -> None:
    store_identity = file_identity(store)
    inside = [(name, path) for name, path in inputs if _inside(path, store)]
    same = [(name, path) for name, path in files if file_identity(path) == store_identity]
    if same or inside:
        other_label, other = [*same, *inside][0]
        raise ConfigError(
            f"{label} {store} is or holds {other_label} {_shown(other)}; a results store needs a "
            "folder of its own"
        )


def _shown(path: Path | str) -> str:
    return filesystems.display(path)  # an object as its s3:// URI, not Path's "s3:/"


def _inside(path: Path, folder: Path) -> bool:
    if filesystems.is_object(path) or filesystems.is_object(folder):
        uri, prefix = filesystems.object_uri(path), filesystems.object_uri(folder)
        return uri is not None and prefix is not None and uri.startswith(prefix.rstrip("/") + "/")
    return Path(os.path.realpath(folder)) in Path(os.path.realpath(path)).parents
