"""The ONNX saliency model: which file, its identity, and one long-lived inference session.

A model id is bound to weights: without ``model_path`` an id names a file ``<id>.onnx`` in the
model search path (``$SALIENCY_ASSETS_MODEL_DIRS``, then the bundled models); without either,
the bundled default is used and its id is its own name. Every run records the file's sha256.

Two inference engines sit behind the same interface: onnxruntime (always installed; any of its
execution providers) and the OpenVINO runtime (the ``openvino`` extra), compiled for the CPU
in FP32. ``providers=("auto",)``, the default when the user names none, takes OpenVINO where it
is installed: on the student models it ran 15-25 % faster at 1080p (issue 14's measurement)
and its clip statistics stay within 1e-6 of onnxruntime's (tests/test_backends.py). Naming
``CPUExecutionProvider`` keeps plain onnxruntime.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import importlib.metadata
import importlib.util
import logging
import os
import queue
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from saliency_assets.core.contract.errors import ConfigError
from saliency_assets.core.model.tiling import (
    Tile,
    TileGeometry,
    WindowInput,
    plan_tiles,
    run_tiles,
)
from saliency_assets.core.tables import filesystems
from saliency_assets.models import DEFAULT_MODEL_NAME, DEFAULT_MODEL_PATH

MODEL_DIRS_ENV = "SALIENCY_ASSETS_MODEL_DIRS"
CPU_PROVIDER = "CPUExecutionProvider"
AUTO = "auto"  # the fastest exact engine installed: OpenVINO, else onnxruntime on the CPU
OPENVINO = "OpenVINO"
ENGINE_NOTICE = "saliency materialize: inference on "  # the line that says which engine auto chose
# Both spellings ask for the OpenVINO runtime package (not onnxruntime's OpenVINO provider).
OPENVINO_NAMES = frozenset({"openvino", "openvinoexecutionprovider"})
# Exactness first: FP32 and the accuracy mode, never the bf16 default of CPUs that have bf16
# (3e-3 off). Streams and threads as asked (_OpenVinoRunner); pinning off, or two single-thread
# workers' threads are pinned to the same core and both run at half speed (issue 14).
OPENVINO_CPU_CONFIG = {
    "INFERENCE_PRECISION_HINT": "f32",
    "EXECUTION_MODE_HINT": "ACCURACY",
    "PERFORMANCE_HINT": "LATENCY",
    "ENABLE_CPU_PINNING": "NO",
    "ENABLE_HYPER_THREADING": "NO",
}
# Frames above this many (padded) pixels run as tiles; up to 1080p (1920x1088 = 2.1 MPix) the
# single call is about 25 % faster and a worker's ~0.9 GB is affordable. At 4K the single call
# needs 3.5 GB per worker; cores of 384 px (464 px windows with the students' margin) keep the
# arena near 100 MB: two 4K workers and their parent peak near 1 GB (benchmarks/README.md).
TILE_ABOVE_PIXELS = 2_500_000
TILE_SIZE = 384
# OpenVINO compiles calls of at least this many pixels for their exact shape (_OpenVinoRunner):
# native frames from about 540p up; tile windows and inference-size frames stay below.
STATIC_FROM_PIXELS = 400_000
WARM_UP_SIDE = 32  # the smallest padded frame (preprocessing.PAD_MULTIPLE)
# glibc's mmap threshold starts at 128 KiB but rises to 32 MiB once a big buffer is freed;
# after that, freed frame tensors, maps and arena chunks stay in the heap (in one arena per
# stream thread): a 4K worker's memory crept up frame by frame (+80 MB over 8 frames) and a
# 1080p worker with two streams held ~100 MB more. Pinned once a model is loaded, they go back
# to the system; a 1080p frame took as long either way, on both engines (benchmarks/README.md).
_MALLOC_MMAP_THRESHOLD = -3  # M_MMAP_THRESHOLD in <malloc.h>
_LARGE_BUFFER_BYTES = 1 << 20
_FLOAT32_NAMES = ("tensor(float)", "f32")
# onnxruntime providers whose calls bind input and output on their device (I/O binding).
BOUND_DEVICES = {"CUDAExecutionProvider": "cuda", "TensorrtExecutionProvider": "cuda"}

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelChoice:
    """The weights a run uses and the id written to its rows."""

    path: Path
    model_id: str
    sha256: str
    engine: str = ""  # the engine that runs it, once validated (prepare_model)


def choose_model(model_path: Path | None, model_id: str | None) -> ModelChoice:
    """Resolve the config's model fields to a file; ConfigError if none fits."""
    declared = declared_model_id(model_path, model_id)
    if model_path is not None:
        path = Path(model_path)
        if not path.is_file():
            raise ConfigError(f"model file {path} does not exist")
        return ModelChoice(path, declared, sha256_file(path))
    if declared != DEFAULT_MODEL_NAME:
        path = _find_model_by_id(declared)
        return ModelChoice(path, declared, sha256_file(path))
    return ModelChoice(DEFAULT_MODEL_PATH, DEFAULT_MODEL_NAME, sha256_file(DEFAULT_MODEL_PATH))


def declared_model_id(model_path: Path | None, model_id: str | None) -> str:
    """The id rows will record, known without touching any file: the given id, else the model
    file's stem, else the bundled default's name."""
    if model_id:
        return model_id
    return Path(model_path).stem if model_path is not None else DEFAULT_MODEL_NAME


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
    """One inference session with the image-in, map-out contract checked at load time.

    Frames larger than ``tile_above_pixels`` run as overlapping windows of about ``tile_size``
    pixels when the model's receptive field is known (:mod:`.tiling`); the stitched map equals
    the single call's within float rounding. ``tile_above_pixels=None`` never tiles.

    ``streams`` calls may run at once, from as many threads, each on ``intra_op_threads``
    threads of its own: a worker infers several frames of a clip side by side (OpenVINO
    compiles that many streams; onnxruntime runs concurrent calls on one session). A stream
    allocates its buffers the first time it is used, so unused streams cost next to nothing.
    On an accelerator (CUDA) ``streams`` is 1.
    """

    def __init__(
        self,
        path: Path,
        providers: tuple[str, ...] = (CPU_PROVIDER,),
        intra_op_threads: int = 1,
        *,
        tile_size: int = TILE_SIZE,
        tile_above_pixels: int | None = TILE_ABOVE_PIXELS,
        streams: int = 1,
    ) -> None:
        self.path = Path(path)
        self.requested = tuple(providers)
        self.threads = intra_op_threads
        self._runner = open_runner(self.path, self.requested, intra_op_threads, max(1, streams))
        self.streams = max(1, streams) if self._runner.on_cpu else 1
        _return_large_buffers_to_the_system()
        if self.streams > 1:
            self._warm_up()
        self.tile_size = tile_size
        self.tile_above_pixels = tile_above_pixels

    @property
    def on_accelerator(self) -> bool:
        """Whether calls run on a device (CUDA) rather than the CPU cores."""
        return not self._runner.on_cpu

    @property
    def providers(self) -> tuple[str, ...]:
        """The engine's providers in use: onnxruntime's list, or ``("OpenVINO",)``."""
        return self._runner.providers

    @property
    def backend(self) -> str:
        """The engine in words, with its version, for logs and benchmark records."""
        return self._runner.description

    def _warm_up(self) -> None:
        """One small call before any two run at once: OpenVINO's Python binding sets numpy up
        on its first call in a one-time initialiser that deadlocks (a C++ static guard held
        while waiting for the GIL) when two threads make their first calls together."""
        try:
            self._runner.run(np.zeros((1, 3, WARM_UP_SIDE, WARM_UP_SIDE), np.float32), False)
        except Exception:  # a model that refuses this size says so on the first real frame
            log.debug("warm-up call refused by %s", self.path, exc_info=True)

    def run_window(self, tensor: np.ndarray, release_memory: bool = False) -> np.ndarray:
        """One call of the model on a [1, 3, h, w] tensor: its (h, w) float32 map. Safe to call
        from up to ``streams`` threads at once."""
        return self._runner.run(tensor, release_memory)

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
            full_map = self.run_window(window_input(0, padded_height, 0, padded_width))
        else:
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

    def _window_runner(self, windows: int):
        """Runs a frame's windows; the last one hands the arena's memory back.

        Between tiled frames the worker reduces full-size maps; without the shrink the arena
        (about 100 MB) would sit idle beside them and set the worker's peak.
        """
        remaining = windows

        def run_window(tensor: np.ndarray) -> np.ndarray:
            nonlocal remaining
            remaining -= 1
            return self.run_window(tensor, release_memory=remaining == 0)

        return run_window


def validate_model_file(path: Path, providers: tuple[str, ...] = (CPU_PROVIDER,)) -> str:
    """Load once to prove the file is a usable saliency model (ConfigError otherwise).

    Returns the engine that runs it. With ``auto`` the file is checked with onnxruntime: a
    worker whose OpenVINO cannot compile the file runs it on onnxruntime, with a warning.
    Commands run this in a short-lived child (:mod:`.model_check`), so neither engine's
    libraries stay in their parent process.
    """
    automatic = tuple(providers) == (AUTO,)
    backend = SaliencyModel(path, (CPU_PROVIDER,) if automatic else providers).backend
    if automatic and openvino_installed():
        backend = _openvino_description()
    return backend


def engine_notice(providers: tuple[str, ...], backend: str) -> str | None:
    """The line that says which engine ``auto`` chose; None when the user named one."""
    if tuple(providers) != (AUTO,):
        return None
    return (
        f"{ENGINE_NOTICE}{backend}, the fastest exact engine installed "
        f"(--providers {CPU_PROVIDER} for plain onnxruntime)"
    )


def openvino_installed() -> bool:
    """Whether the OpenVINO runtime can be imported (found without importing it)."""
    return importlib.util.find_spec("openvino") is not None


def _openvino_description() -> str:
    return f"OpenVINO {importlib.metadata.version('openvino')} (CPU, FP32)"


def open_runner(path: Path, providers: tuple[str, ...], threads: int, streams: int = 1) -> _Runner:
    """The engine ``providers`` asks for: OpenVINO (asked by name, or ``auto`` where it is
    installed) or onnxruntime with the providers it has; a missing one falls back with a
    warning, never silently. ``streams`` calls of ``threads`` threads each may run at once."""
    wants_openvino = bool(providers) and providers[0].lower() in OPENVINO_NAMES
    automatic = tuple(providers) == (AUTO,)
    if wants_openvino or automatic:
        if openvino_installed():
            return _openvino_or_fallback(path, threads, streams, automatic)
        if wants_openvino:
            log.warning(
                "%s is not installed (pip install 'saliency-assets[openvino]'); falling back to %s",
                OPENVINO,
                CPU_PROVIDER,
            )
        providers = tuple(name for name in providers[1:] if name.lower() not in OPENVINO_NAMES)
    return _OnnxRuntimeRunner(path, providers or (CPU_PROVIDER,), threads)


def _openvino_or_fallback(path: Path, threads: int, streams: int, automatic: bool) -> _Runner:
    try:
        return _OpenVinoRunner(path, threads, streams)
    except ConfigError as error:
        if not automatic:
            raise
        log.warning("OpenVINO cannot run this model (%s); running it on onnxruntime", error)
        return _OnnxRuntimeRunner(path, (CPU_PROVIDER,), threads)


def available_providers(requested: tuple[str, ...]) -> list[str]:
    """The requested providers this onnxruntime build has, CPU always last as the fallback."""
    installed = set(_onnxruntime().get_available_providers())
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


def _onnxruntime():
    """onnxruntime, imported where a session is made: a worker on OpenVINO never loads it."""
    import onnxruntime

    return onnxruntime


@functools.cache
def _shrink_arena_options():
    options = _onnxruntime().RunOptions()
    options.add_run_config_entry("memory.enable_memory_arena_shrinkage", "cpu:0")
    return options


@functools.cache
def _return_large_buffers_to_the_system() -> None:
    """Pin glibc's mmap threshold (once per process); a no-op on other C libraries."""
    try:
        ctypes.CDLL("libc.so.6").mallopt(_MALLOC_MMAP_THRESHOLD, _LARGE_BUFFER_BYTES)
    except (OSError, AttributeError):
        pass


def _read_tile_geometry(path: Path) -> TileGeometry | None:
    # Imported here: onnx costs a tenth of a second at every start and only tiling needs it.
    from saliency_assets.core.model.receptive_field import tile_geometry

    try:
        return tile_geometry(path)
    except Exception as error:  # an unreadable graph is never tiled; the session still runs it
        log.warning("model %s: receptive field unknown (%s); frames run untiled", path, error)
        return None


Port = tuple[str, list, str]  # name, shape, element type as the engine names it


class _Runner:
    """One engine's session: ``run(tensor, release_memory)`` gives the (h, w) float32 map;
    ``release_memory`` hands the engine's idle buffers back after the call where it can."""

    providers: tuple[str, ...]
    description: str
    on_cpu = True  # threads only matter to an engine that computes on the CPU cores

    def run(self, tensor: np.ndarray, release_memory: bool) -> np.ndarray:
        raise NotImplementedError


class _OnnxRuntimeRunner(_Runner):
    """One onnxruntime session; concurrent calls each run on their caller's thread (with one
    intra-op thread), so streams need nothing more.

    On a device that onnxruntime binds (:data:`BOUND_DEVICES`), a call binds its input and
    output (I/O binding): the frame is copied to the device once, straight from the caller's
    array, and the map stays there until copied back once, without ``run``'s staging.
    """

    def __init__(self, path: Path, providers: tuple[str, ...], threads: int) -> None:
        self.session = _open_session(path, providers, threads)
        self.input_name, self.output_name = _check_contract(
            [(port.name, port.shape, port.type) for port in self.session.get_inputs()],
            [(port.name, port.shape, port.type) for port in self.session.get_outputs()],
            path,
        )
        self.providers = tuple(self.session.get_providers())
        self.on_cpu = self.providers[0] == CPU_PROVIDER
        self.description = f"onnxruntime {_onnxruntime().__version__} ({', '.join(self.providers)})"
        self.bound_device = BOUND_DEVICES.get(self.providers[0])

    def run(self, tensor: np.ndarray, release_memory: bool) -> np.ndarray:
        if self.bound_device is not None:
            return self._run_bound(tensor)
        options = _shrink_arena_options() if release_memory else None
        outputs = self.session.run([self.output_name], {self.input_name: tensor}, options)
        return np.asarray(outputs[0][0, 0], dtype=np.float32)

    def _run_bound(self, tensor: np.ndarray) -> np.ndarray:
        binding = self.session.io_binding()
        binding.bind_cpu_input(self.input_name, np.ascontiguousarray(tensor))
        binding.bind_output(self.output_name, self.bound_device)
        self.session.run_with_iobinding(binding)
        return np.asarray(binding.copy_outputs_to_cpu()[0][0, 0], dtype=np.float32)


class _OpenVinoRunner(_Runner):
    """The OpenVINO runtime, compiled for the CPU with :data:`OPENVINO_CPU_CONFIG` and
    ``streams`` streams of ``threads`` threads.

    Calls of :data:`STATIC_FROM_PIXELS` or more run on a compile for their exact shape, the
    latest shape's kept: known at compile time, a 1920x1088 call needs 573 MB a stream instead
    of 653 (544x960: 227 instead of 246), bit for bit the same map and no slower. Smaller
    calls (tile windows, inference-size frames, whose shapes vary from clip to clip) share
    the compile for any shape.
    """

    providers = (OPENVINO,)

    def __init__(self, path: Path, threads: int, streams: int = 1) -> None:
        from saliency_assets.core.model.openvino_runtime import openvino

        self._openvino, self._path, self._streams = openvino, path, streams
        self._core = openvino.Core()
        try:
            self._model = self._core.read_model(str(path))
        except Exception as error:  # OpenVINO raises RuntimeError subtypes for bad files
            raise ConfigError(f"model file {path} is not a loadable ONNX model: {error}") from None
        _check_contract(
            [_ov_port(port) for port in self._model.inputs],
            [_ov_port(port) for port in self._model.outputs],
            path,
        )
        self._config = {
            **OPENVINO_CPU_CONFIG,
            "NUM_STREAMS": str(streams),
            "INFERENCE_NUM_THREADS": str(threads * streams),
        }
        self._any_shape = self._compile(self._model)
        self._exact_shape: _CompiledModel | None = None
        self._compiling = threading.Lock()
        self.description = _openvino_description()

    @property
    def compiled(self):
        """The compile for any shape (what the settings are read back from)."""
        return self._any_shape.compiled

    def run(self, tensor: np.ndarray, release_memory: bool) -> np.ndarray:
        return self._compiled_for(tuple(tensor.shape)).infer(tensor)

    def _compiled_for(self, shape: tuple[int, ...]) -> _CompiledModel:
        if shape[-2] * shape[-1] < STATIC_FROM_PIXELS:
            return self._any_shape
        exact = self._exact_shape
        if exact is None or exact.shape != shape:
            with self._compiling:  # a second stream with the same new shape waits for it
                if self._exact_shape is None or self._exact_shape.shape != shape:
                    self._exact_shape = None  # the old shape's buffers go before the new one's
                    self._exact_shape = self._compile(self._reshaped(shape), shape)
                exact = self._exact_shape
        return exact

    def _reshaped(self, shape: tuple[int, ...]):
        model = self._model.clone()
        model.reshape({0: list(shape)})
        return model

    def _compile(self, model, shape: tuple[int, ...] | None = None) -> _CompiledModel:
        try:
            compiled = self._core.compile_model(model, "CPU", self._config)
        except Exception as error:  # OpenVINO raises RuntimeError subtypes for bad files
            raise ConfigError(
                f"model file {self._path} is not a loadable ONNX model: {error}"
            ) from None
        precision = compiled.get_property("INFERENCE_PRECISION_HINT")
        if precision != self._openvino.Type.f32:  # never a silent bf16 run
            raise ConfigError(f"OpenVINO compiled {self._path} for {precision}, not f32")
        return _CompiledModel(compiled, self._streams, shape)


class _CompiledModel:
    """An OpenVINO compiled model and one infer request per stream, taken by the call that
    runs on it; ``shape`` is the input shape it was compiled for (None: any)."""

    def __init__(self, compiled, streams: int, shape: tuple[int, ...] | None) -> None:
        self.compiled, self.shape = compiled, shape
        self.requests: queue.SimpleQueue = queue.SimpleQueue()
        for _ in range(streams):
            self.requests.put(compiled.create_infer_request())

    def infer(self, tensor: np.ndarray) -> np.ndarray:
        request = self.requests.get()
        try:
            outputs = request.infer({0: tensor}, share_inputs=True, share_outputs=False)
        finally:
            self.requests.put(request)
        return np.asarray(outputs[0][0, 0], dtype=np.float32)


def _ov_port(port) -> Port:
    shape = [dim.get_length() if dim.is_static else "?" for dim in port.get_partial_shape()]
    return port.any_name, shape, port.element_type.get_type_name()


def _open_session(path: Path, providers: tuple[str, ...], threads: int):
    ort = _onnxruntime()
    options = ort.SessionOptions()
    # One thread per call: the engine runs one call per core (frames side by side), and a
    # second thread in one call buys less than a second frame (benchmarks/README.md).
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


def _check_contract(inputs: list[Port], outputs: list[Port], path: Path) -> tuple[str, str]:
    if len(inputs) != 1 or len(outputs) != 1:
        raise ConfigError(
            f"model {path} must have one image input and one map output, "
            f"has {len(inputs)} inputs and {len(outputs)} outputs"
        )
    _name, shape, kind = inputs[0]
    if len(shape) != 4 or shape[1] not in (3, "3") or kind not in _FLOAT32_NAMES:
        raise ConfigError(f"model {path} input must be float [1,3,H,W], is {kind} {shape}")
    if len(outputs[0][1]) != 4:
        raise ConfigError(f"model {path} output must be [1,1,H,W], is {outputs[0][1]}")
    return inputs[0][0], outputs[0][0]
