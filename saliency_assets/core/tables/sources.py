"""From a table row to the clip it names: path resolution and raw-video geometry.

Containers carry their own geometry, so only raw ``.yuv`` sources need the row's width and
height. The fallback order is the reference's: row, then the configured default, then a probe
(for raw files: a ``WIDTHxHEIGHT`` token in the file name, since nothing else can be read).
"""

from __future__ import annotations

import math
import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from saliency_assets.core.contract.config import MaterializeConfig
from saliency_assets.core.contract.statuses import MISSING_GEOMETRY, MISSING_SOURCE
from saliency_assets.core.decode.clips import RAW_PIX_FMTS, RAW_SUFFIXES, ClipSource
from saliency_assets.core.tables import filesystems

_GEOMETRY_IN_NAME = re.compile(r"(?<![0-9])([1-9][0-9]{1,4})x([1-9][0-9]{1,4})(?![0-9])")


@dataclass(frozen=True)
class Unresolved:
    """A row whose clip cannot be computed, with the status and the reason."""

    status: str
    detail: str


def resolve_clip(row: dict[str, Any], config: MaterializeConfig) -> ClipSource | Unresolved:
    """The clip a row names, or why it names none."""
    located = locate_source(row, config)
    if isinstance(located, Unresolved):
        return located
    if located.suffix.lower() not in RAW_SUFFIXES:
        return ClipSource(path=located)
    return _raw_clip(row, config, located)


def clip_key(source: ClipSource) -> str:
    """A stable identity for one unique computation: the path, plus geometry for raw files."""
    if not source.is_raw:
        return str(source.path)
    return f"{source.path}|{source.raw_width}x{source.raw_height}|{source.raw_pix_fmt}"


def locate_source(row: dict[str, Any], config: MaterializeConfig) -> Path | Unresolved:
    """Resolve the path column against ``root`` and check it is a readable regular file."""
    value = row.get(config.path_column)
    if value is None or value == "":
        return Unresolved(MISSING_SOURCE, f"path column {config.path_column!r} is empty")
    if not isinstance(value, str):
        return Unresolved(
            MISSING_SOURCE,
            f"path column {config.path_column!r} holds {type(value).__name__} "
            f"{_short(value)}, not a path",
        )
    unusable = _unusable_path(value)
    if unusable:
        return Unresolved(MISSING_SOURCE, f"path {_short(value)} {unusable}")
    path = _confined(_joined(Path(value), config.root), config)
    if isinstance(path, Unresolved):
        return path
    return _checked_file(path)


def raw_geometry(row: dict[str, Any], config: MaterializeConfig, path: Path) -> tuple[int, int]:
    """Width and height by the reference's order: row, then default, then the file name."""
    width = _dimension(row.get(config.width_column))
    height = _dimension(row.get(config.height_column))
    if width <= 0 and config.default_width > 0:
        width = config.default_width
    if height <= 0 and config.default_height > 0:
        height = config.default_height
    if width <= 0 or height <= 0:
        width, height = _geometry_from_name(path.name) or (width, height)
    return width, height


def _raw_clip(
    row: dict[str, Any], config: MaterializeConfig, path: Path
) -> ClipSource | Unresolved:
    width, height = raw_geometry(row, config, path)
    if width <= 0 or height <= 0:
        return Unresolved(
            MISSING_GEOMETRY,
            f"raw video {path.name} needs a width and height: set columns "
            f"{config.width_column!r}/{config.height_column!r} or default_width/default_height",
        )
    pix_fmt = row.get(config.pix_fmt_column) if config.pix_fmt_column else None
    if not isinstance(pix_fmt, str) or not pix_fmt:
        pix_fmt = config.default_pix_fmt
    if pix_fmt not in RAW_PIX_FMTS:
        return Unresolved(
            MISSING_GEOMETRY,
            f"raw pixel format {pix_fmt!r} is not supported (use one of {', '.join(RAW_PIX_FMTS)})",
        )
    return ClipSource(path=path, raw_width=width, raw_height=height, raw_pix_fmt=pix_fmt)


def _joined(path: Path, root: Path | None) -> Path:
    if filesystems.is_object(path):
        return Path(filesystems.object_uri(path))
    if filesystems.is_object(root):
        return Path(filesystems.join(root, str(path)))
    if not path.is_absolute() and root is not None:
        path = root / path
    # Normalised so that "a/../x.mp4" and "x.mp4" are one clip (the reference kept both).
    return Path(os.path.normpath(path))


def _unusable_path(value: str) -> str | None:
    """Why no file system could hold this path, if so (os calls would raise ValueError)."""
    if "\x00" in value:
        return "contains a NUL character"
    try:
        os.fsencode(value)
    except UnicodeEncodeError:
        return "cannot be encoded as a file name (lone surrogate characters)"
    return None


def _confined(path: Path, config: MaterializeConfig) -> Path | Unresolved:
    """Under ``confine_to_root``, the path with every symlink resolved, if that lies inside the
    root: the file checked is the file later opened, so a link swapped meanwhile cannot lead
    out of the root."""
    if not config.confine_to_root or config.root is None:
        return path
    if filesystems.is_object(path) or filesystems.is_object(config.root):
        return _confined_object(path, config)
    root = Path(os.path.realpath(config.root))
    real = Path(os.path.realpath(path))
    if real == root or root in real.parents:
        return real
    return Unresolved(
        MISSING_SOURCE, f"{path} is outside root {config.root} (confine_to_root is set)"
    )


def _confined_object(path: Path, config: MaterializeConfig) -> Path | Unresolved:
    """Objects have no links: an object is inside an ``s3://`` root when its URI is under the
    root's (compared as strings, never resolved as local paths)."""
    uri, root = filesystems.object_uri(path), filesystems.object_uri(config.root)
    if uri is not None and root is not None and uri.startswith(root.rstrip("/") + "/"):
        return path
    where = filesystems.display(path)
    return Unresolved(
        MISSING_SOURCE,
        f"{where} is outside root {filesystems.display(config.root)} (confine_to_root is set)",
    )


def _checked_file(path: Path) -> Path | Unresolved:
    if filesystems.is_object(path):
        return _checked_object(path)
    try:
        mode = path.stat().st_mode
    except OSError as error:
        reason = error.strerror or type(error).__name__
        return Unresolved(MISSING_SOURCE, f"{path}: {reason}")
    if stat.S_ISDIR(mode):
        return Unresolved(MISSING_SOURCE, f"{path} is a directory, not a video file")
    if not stat.S_ISREG(mode):
        return Unresolved(MISSING_SOURCE, f"{path} is not a regular file")
    if not os.access(path, os.R_OK):
        return Unresolved(MISSING_SOURCE, f"{path} is not readable (permission denied)")
    return path


def _checked_object(path: Path) -> Path | Unresolved:
    uri = filesystems.object_uri(path)
    try:
        kind = filesystems.stat(path).kind
    except OSError as error:
        return Unresolved(MISSING_SOURCE, f"{uri}: cannot be read ({error})")
    if kind == "missing":
        return Unresolved(MISSING_SOURCE, f"{uri}: no such object")
    if kind != "file":
        return Unresolved(MISSING_SOURCE, f"{uri} is a prefix (a folder), not a video file")
    return path


def _dimension(value: Any) -> int:
    """A finite number (or numeric string) truncated to int; anything else is 0."""
    if isinstance(value, bool):
        return 0
    try:
        number = float(value)
    except (TypeError, ValueError, OverflowError):  # OverflowError: an int beyond any float
        return 0
    return int(number) if math.isfinite(number) else 0


def _geometry_from_name(name: str) -> tuple[int, int] | None:
    match = _GEOMETRY_IN_NAME.search(name)
    return (int(match.group(1)), int(match.group(2))) if match else None


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
