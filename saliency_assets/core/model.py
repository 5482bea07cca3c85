"""The ONNX saliency model: which file, its identity, and one long-lived session.

A model id is bound to weights: without ``model_path`` an id names a file ``<id>.onnx`` in the
model search path (``$SALIENCY_ASSETS_MODEL_DIRS``, then the bundled models); without either,
the bundled default is used and its id is its own name. Every run records the file's sha256.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

from saliency_assets.core import filesystems
from saliency_assets.core.errors import ConfigError
from saliency_assets.core.tiling import (
    Tile,
    TileGeometry,
    WindowInput,
    plan_tiles,
    run_tiles,
)
from saliency_assets.models import DEFAULT_MODEL_NAME, DEFAULT_MODEL_PATH

MODEL_DIRS_ENV = "SALIENCY_ASSETS_MODEL_DIRS"
CPU_PROVIDER = "CPUExecutionProvider"
# Frames above this many (padded) pixels run as tiles; up to 1080p (1920x1088 = 2.1 MPix) the
# single call is about 25 % faster and a worker's ~0.9 GB is affordable. At 4K the single call
# needs 3.5 GB per worker; cores of 384 px (464 px windows with the students' margin) keep the
# arena near 100 MB: two 4K workers and their parent peak near 1 GB (benchmarks/README.md).
TILE_ABOVE_PIXELS = 2_500_000
TILE_SIZE = 384
# glibc's mmap threshold starts at 128 KiB but rises to 32 MiB once a big buffer is freed;
# after that, freed window tensors and arena chunks stay in the heap and a 4K worker's memory
# creeps up frame by frame (+80 MB over 8 frames). Pinned, they go back to the system; it is
# pinned only once a frame is tiled, as it costs ~5 % on the single call (page faults).
_MALLOC_MMAP_THRESHOLD = -3  # M_MMAP_THRESHOLD in <malloc.h>
_LARGE_BUFFER_BYTES = 1 << 20
_SHRINK_ARENA = ort.RunOptions()
_SHRINK_ARENA.add_run_config_entry("memory.enable_memory_arena_shrinkage", "cpu:0")

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelChoice:
    """The weights a run uses and the id written to its rows."""

    path: Path
    model_id: str
    sha256: str


def choose_model(model_path: Path | None, model_id: str | None) -> ModelChoice:
    """Resolve the config's model fields to a file; ConfigError if none fits."""
    if model_path is not None:
        path = Path(model_path)
        if not path.is_file():
            raise ConfigError(f"model file {path} does not exist")
        return ModelChoice(path, model_id or path.stem, sha256_file(path))
    if model_id and model_id != DEFAULT_MODEL_NAME:
        path = _find_model_by_id(model_id)
        return ModelChoice(path, model_id, sha256_file(path))
    return ModelChoice(DEFAULT_MODEL_PATH, DEFAULT_MODEL_NAME, sha256_file(DEFAULT_MODEL_PATH))


def model_search_dirs() -> list[Path]:
    configured = os.environ.get(MODEL_DIRS_ENV, "")
    dirs = [Path(part) for part in configured.split(os.pathsep) if part]
    return [*dirs, DEFAULT_MODEL_PATH.parent]


def sha256_file(path: Path) -> str:
    """SHA-256 of a local file or an ``s3://`` object, read 1 MiB at a time."""
    digest = hashlib.sha256()
    with filesystems.open_input(path) as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


class SaliencyModel:
    """One onnxruntime session with the image-in, map-out contract checked at load time.

    Frames larger than ``tile_above_pixels`` run as overlapping windows of about ``tile_size``
    pixels when the model's receptive field is known (:mod:`.tiling`); the stitched map equals
    the single call's within float rounding. ``tile_above_pixels=None`` never tiles.
    """

    def __init__(
        self,
        path: Path,
        providers: tuple[str, ...] = (CPU_PROVIDER,),
        intra_op_threads: int = 1,
        *,
        tile_size: int = TILE_SIZE,
        tile_above_pixels: int | None = TILE_ABOVE_PIXELS,
    ) -> None:
        self.path = Path(path)
        self.session = _open_session(self.path, providers, intra_op_threads)
        self.input_name, self.output_name = _check_contract(self.session, self.path)
        self.providers = tuple(self.session.get_providers())
        self.tile_size = tile_size
        self.tile_above_pixels = tile_above_pixels

    def predict(self, tensor: np.ndarray, height: int, width: int) -> np.ndarray:
        """Run one padded NCHW tensor; return the (height, width) float32 map, cropped."""
        padded_height, padded_width = tensor.shape[-2:]

        def window(top: int, bottom: int, left: int, right: int) -> np.ndarray:
            return np.ascontiguousarray(tensor[:, :, top:bottom, left:right])

        return self.predict_windows(window, padded_height, padded_width, height, width)

    def predict_windows(
        self,
        window_input: WindowInput,
        padded_height: int,
        padded_width: int,
        height: int,
        width: int,
    ) -> np.ndarray:
        """Like :meth:`predict`, but the input is built window by window on demand.

        ``window_input(top, bottom, left, right)`` returns that window of the padded frame as
        a [1, C, h, w] float32 tensor, so a large frame never exists as one tensor.
        """
        tiles = self.tiles_for(padded_height, padded_width)
        if tiles is None:
            full_map = self._run(window_input(0, padded_height, 0, padded_width))
        else:
            _return_large_buffers_to_the_system()
            full_map = run_tiles(tiles, window_input, self._window_runner(len(tiles)))
        return full_map[:height, :width]

    @functools.cached_property
    def tile_geometry(self) -> TileGeometry | None:
        """The model's receptive field, read the first time a frame is big enough to tile."""
        return _read_tile_geometry(self.path)

    def tiles_for(self, padded_height: int, padded_width: int) -> list[Tile] | None:
        """The windows a frame of this padded size runs as, or None for a single call."""
        if self.tile_above_pixels is None or padded_height * padded_width <= self.tile_above_pixels:
            return None
        if self.tile_geometry is None:
            return None
        tiles = plan_tiles(padded_height, padded_width, self.tile_geometry, self.tile_size)
        return tiles if len(tiles) > 1 else None

    def _run(self, tensor: np.ndarray, run_options: ort.RunOptions | None = None) -> np.ndarray:
        outputs = self.session.run([self.output_name], {self.input_name: tensor}, run_options)
        return np.asarray(outputs[0][0, 0], dtype=np.float32)

    def _window_runner(self, windows: int):
        """Runs a frame's windows; the last one hands the arena's memory back.

        Between tiled frames the worker reduces full-size maps; without the shrink the arena
        (about 100 MB) would sit idle beside them and set the worker's peak.
        """
        remaining = windows

        def run_window(tensor: np.ndarray) -> np.ndarray:
            nonlocal remaining
            remaining -= 1
            return self._run(tensor, _SHRINK_ARENA if remaining == 0 else None)

        return run_window


def validate_model_file(path: Path, providers: tuple[str, ...] = (CPU_PROVIDER,)) -> None:
    """Load once to prove the file is a usable saliency model (ConfigError otherwise)."""
    SaliencyModel(path, providers)


def available_providers(requested: tuple[str, ...]) -> list[str]:
    """The requested providers this onnxruntime build has, CPU always last as the fallback."""
    installed = set(ort.get_available_providers())
    chosen = [name for name in requested if name in installed and name != CPU_PROVIDER]
    missing = [name for name in requested if name not in installed]
    if missing:
        log.warning(
            "execution providers %s are not available; falling back to %s",
            ", ".join(missing),
            ", ".join([*chosen, CPU_PROVIDER]),
        )
    return [*chosen, CPU_PROVIDER]


def _find_model_by_id(model_id: str) -> Path:
    for folder in model_search_dirs():
        candidate = folder / f"{model_id}.onnx"
        if candidate.is_file():
            return candidate
    searched = ", ".join(str(folder) for folder in model_search_dirs())
    raise ConfigError(
        f"model_id {model_id!r} names no model: no {model_id}.onnx in {searched}; "
        f"pass model_path or add its folder to ${MODEL_DIRS_ENV}"
    )


@functools.cache
def _return_large_buffers_to_the_system() -> None:
    """Pin glibc's mmap threshold (once per process); a no-op on other C libraries."""
    try:
        ctypes.CDLL("libc.so.6").mallopt(_MALLOC_MMAP_THRESHOLD, _LARGE_BUFFER_BYTES)
    except (OSError, AttributeError):
        pass


def _read_tile_geometry(path: Path) -> TileGeometry | None:
    # Imported here: onnx costs a tenth of a second at every start and only tiling needs it.
    from saliency_assets.core.receptive_field import tile_geometry

    try:
        return tile_geometry(path)
    except Exception as error:  # an unreadable graph is never tiled; the session still runs it
        log.warning("model %s: receptive field unknown (%s); frames run untiled", path, error)
        return None


def _open_session(path: Path, providers: tuple[str, ...], threads: int) -> ort.InferenceSession:
    options = ort.SessionOptions()
    # One thread per worker process: the engine runs a process per core, and at these sizes a
    # second thread in one session buys nothing (benchmarks/README.md).
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # Window shapes vary, so a memory pattern per shape only holds extra buffers; the arena
    # stays on and is bounded by the largest window.
    options.enable_mem_pattern = False
    options.enable_cpu_mem_arena = True
    options.log_severity_level = 3
    try:
        return ort.InferenceSession(str(path), options, providers=available_providers(providers))
    except Exception as error:  # onnxruntime raises several unrelated types for bad files
        raise ConfigError(f"model file {path} is not a loadable ONNX model: {error}") from None


def _check_contract(session: ort.InferenceSession, path: Path) -> tuple[str, str]:
    inputs = session.get_inputs()
    outputs = session.get_outputs()
    if len(inputs) != 1 or len(outputs) != 1:
        raise ConfigError(
            f"model {path} must have one image input and one map output, "
            f"has {len(inputs)} inputs and {len(outputs)} outputs"
        )
    shape = inputs[0].shape
    if len(shape) != 4 or shape[1] not in (3, "3") or "float" not in inputs[0].type:
        raise ConfigError(
            f"model {path} input must be float [1,3,H,W], is {inputs[0].type} {shape}"
        )
    if len(outputs[0].shape) != 4:
        raise ConfigError(f"model {path} output must be [1,1,H,W], is {outputs[0].shape}")
    return inputs[0].name, outputs[0].name
