"""The materializer's configuration: one frozen record whose field names are the manifest keys.

The first 19 fields are the reference tool's, with the same names, defaults and meaning
(REFERENCE.md section 2), except ``ffmpeg_bin``/``ffprobe_bin`` which default to ``None``:
decoding runs in-process through PyAV unless the user names a binary. The rest are ours.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

from saliency_assets.core.contract.errors import ConfigError
from saliency_assets.core.decode.clips import RAW_PIX_FMTS, SAMPLING_MODES, SamplingPlan
from saliency_assets.core.decode.hdr import HDR_MODES, HDR_TONEMAP

TEMPORAL_AGGREGATORS = ("mean", "ema", "max", "motion-weighted")
PATH_FIELDS = ("root", "model_path")
MIN_INFERENCE_SIZE = 8
# results_store URL schemes with a backend: scheme -> module offering open_store(url, log).
RESULTS_STORE_BACKENDS: dict[str, str] = {
    "postgresql": "saliency_assets.core.run.pg_store",
    "postgres": "saliency_assets.core.run.pg_store",
}
_URL_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
_URL_PASSWORD = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*://[^/@:]*:)[^/@]*@")
# 8K UHD's short side; more only upscales, and an unbounded size is a memory bomb.
MAX_INFERENCE_SIZE = 4320


@dataclass(frozen=True)
class MaterializeConfig:
    """Everything that decides which rows are computed, how, and which columns are written."""

    # The reference tool's 19 fields.
    path_column: str = "src"
    width_column: str = "width"
    height_column: str = "height"
    root: Path | None = None
    ffmpeg_bin: str | None = None
    ffprobe_bin: str | None = None
    model_path: Path | None = None
    model_id: str | None = None
    max_frames: int = 8
    frame_samples: int = 8
    temporal_aggregator: str = "mean"
    ema_alpha: float = 0.6
    overwrite: bool = False
    status_column: str = "saliency_status"
    model_id_column: str = "saliency_model_id"
    aggregator_column: str = "saliency_aggregator"
    ema_alpha_column: str = "saliency_ema_alpha"
    default_width: int = 0
    default_height: int = 0
    # New settings.
    sampling: str = "head"
    inference_size: int | None = None
    default_pix_fmt: str = "yuv420p"
    pix_fmt_column: str = "pix_fmt"
    decode_timeout: float | None = 120.0
    jobs: int | None = None
    # "auto": the fastest exact engine installed (OpenVINO with the extra, else onnxruntime).
    providers: tuple[str, ...] = ("auto",)
    confine_to_root: bool = False
    results_store: str = "default"
    error_column: str = "saliency_error"
    sampling_column: str = "saliency_sampling"
    inference_size_column: str = "saliency_inference_size"
    hdr: str = HDR_TONEMAP
    transfer_column: str = "saliency_transfer"
    ray_address: str | None = None

    @property
    def sampling_plan(self) -> SamplingPlan:
        return SamplingPlan(
            max_frames=self.max_frames,
            frame_samples=self.frame_samples,
            sampling=self.sampling,
            inference_size=self.inference_size,
            hdr=self.hdr,
        )

    @property
    def effective_jobs(self) -> int:
        return self.jobs or os.cpu_count() or 1

    def to_json(self) -> dict[str, Any]:
        """The config as JSON values (paths as strings), for audits and reports."""
        record = asdict(self)
        for name in PATH_FIELDS:
            record[name] = None if record[name] is None else str(record[name])
        record["providers"] = list(self.providers)
        record["results_store"] = redact_url(self.results_store)
        return record


CONFIG_FIELDS = tuple(field.name for field in fields(MaterializeConfig))
_BOOL_FIELDS = {"overwrite", "confine_to_root"}
_INT_FIELDS = {"max_frames", "frame_samples", "default_width", "default_height"}
_OPTIONAL_INT_FIELDS = {"inference_size", "jobs"}
_FLOAT_FIELDS = {"ema_alpha"}
_OPTIONAL_FLOAT_FIELDS = {"decode_timeout"}
_OPTIONAL_STR_FIELDS = {"ffmpeg_bin", "ffprobe_bin", "model_id", "ray_address"}


def config_from_mapping(values: dict[str, Any], where: str) -> MaterializeConfig:
    """Build a validated config from manifest-style values; errors name ``where`` and the key."""
    unknown = sorted(set(values) - set(CONFIG_FIELDS))
    if unknown:
        raise ConfigError(f"{where}: unknown keys {unknown}")
    converted = {name: _convert(name, value, where) for name, value in values.items()}
    config = MaterializeConfig(**converted)
    validate_config(config, where)
    return config


def validate_config(config: MaterializeConfig, where: str = "config") -> None:
    """Reject values no run could succeed with, naming the key, before any clip is decoded."""
    if config.temporal_aggregator not in TEMPORAL_AGGREGATORS:
        raise ConfigError(
            f"{where}: temporal_aggregator {config.temporal_aggregator!r} is not one of "
            f"{', '.join(TEMPORAL_AGGREGATORS)}"
        )
    if not (0.0 < config.ema_alpha <= 1.0) or math.isnan(config.ema_alpha):
        raise ConfigError(f"{where}: ema_alpha must be in (0, 1], got {config.ema_alpha!r}")
    for name in ("max_frames", "frame_samples"):
        if getattr(config, name) < 1:
            raise ConfigError(f"{where}: {name} must be at least 1, got {getattr(config, name)}")
    for name in ("default_width", "default_height"):
        if getattr(config, name) < 0:
            raise ConfigError(f"{where}: {name} must be 0 (none) or positive")
    if config.sampling not in SAMPLING_MODES:
        raise ConfigError(f"{where}: sampling must be one of {', '.join(SAMPLING_MODES)}")
    if config.inference_size is not None and not (
        MIN_INFERENCE_SIZE <= config.inference_size <= MAX_INFERENCE_SIZE
    ):
        raise ConfigError(
            f"{where}: inference_size must be 'native' or from {MIN_INFERENCE_SIZE} to "
            f"{MAX_INFERENCE_SIZE}, got {config.inference_size}"
        )
    if config.hdr not in HDR_MODES:
        raise ConfigError(f"{where}: hdr must be one of {', '.join(HDR_MODES)}, got {config.hdr!r}")
    if config.default_pix_fmt not in RAW_PIX_FMTS:
        raise ConfigError(f"{where}: default_pix_fmt must be one of {', '.join(RAW_PIX_FMTS)}")
    if config.decode_timeout is not None and not config.decode_timeout > 0:
        raise ConfigError(f"{where}: decode_timeout must be a positive number of seconds")
    if config.jobs is not None and config.jobs < 1:
        raise ConfigError(f"{where}: jobs must be at least 1")
    if not config.path_column:
        raise ConfigError(f"{where}: path_column must not be empty")
    if config.confine_to_root and config.root is None:
        raise ConfigError(f"{where}: confine_to_root needs a root to confine clip paths to")
    if not config.providers:
        raise ConfigError(f"{where}: providers must name at least one execution provider")
    _validate_results_store(config.results_store, where)


def results_store_scheme(value: str) -> str | None:
    """The URL scheme of a ``results_store`` value (lower case), or None for a folder path."""
    match = _URL_SCHEME.match(value)
    return match.group(1).lower() if match else None


def redact_url(value: str) -> str:
    """``value`` with any password in its URL replaced by ``***``, for messages and audits."""
    return _URL_PASSWORD.sub(r"\1***@", value)


def _validate_results_store(value: str, where: str) -> None:
    """A URL is never taken for a folder (``postgresql://...`` would become ``./postgresql:``)."""
    if not value:
        raise ConfigError(f"{where}: results_store must not be empty (use 'none' for no store)")
    scheme = results_store_scheme(value)
    if scheme is not None and scheme not in RESULTS_STORE_BACKENDS:
        supported = ", ".join(f"{name}://" for name in sorted(RESULTS_STORE_BACKENDS))
        raise ConfigError(
            f"{where}: results_store {redact_url(value)!r} is a URL, and no results store handles "
            f"{scheme}:// (use a folder, 'default' or 'none'"
            f"{', or ' + supported if supported else ''})"
        )


def with_overrides(config: MaterializeConfig, **overrides: Any) -> MaterializeConfig:
    """A copy with some fields replaced, validated again."""
    updated = replace(config, **overrides)
    validate_config(updated)
    return updated


def parse_inference_size(text: str) -> int | None:
    """``native`` -> None (compatible mode); a positive integer -> that short side."""
    if text.strip().lower() == "native":
        return None
    try:
        return int(text)
    except ValueError:
        raise ConfigError(f"inference_size must be 'native' or an integer, got {text!r}") from None


def _convert(name: str, value: Any, where: str) -> Any:
    if name in PATH_FIELDS:
        return _as_path(name, value, where)
    if name in _BOOL_FIELDS:
        return _require(name, value, where, bool, "true or false")
    if name in _INT_FIELDS:
        return _as_int(name, value, where)
    if name in _OPTIONAL_INT_FIELDS:
        return _as_optional_int(name, value, where)
    if name in _FLOAT_FIELDS or name in _OPTIONAL_FLOAT_FIELDS:
        if value is None and name in _OPTIONAL_FLOAT_FIELDS:
            return None
        return float(_require(name, value, where, (int, float), "a number"))
    if name == "providers":
        return _as_providers(value, where)
    if name in _OPTIONAL_STR_FIELDS and value is None:
        return None
    return _require(name, value, where, str, "a string")


def _require(name: str, value: Any, where: str, kinds: Any, described: str) -> Any:
    is_bool = isinstance(value, bool)
    wants_bool = kinds is bool
    if not isinstance(value, kinds) or (is_bool and not wants_bool):
        raise ConfigError(f"{where}: {name} must be {described}, got {value!r}")
    return value


def _as_int(name: str, value: Any, where: str) -> int:
    return _require(name, value, where, int, "an integer")


def _as_optional_int(name: str, value: Any, where: str) -> int | None:
    if value is None or (name == "inference_size" and value == "native"):
        return None
    return _as_int(name, value, where)


def _as_path(name: str, value: Any, where: str) -> Path | None:
    if value is None or value == "":
        return None
    return Path(_require(name, value, where, str, "a path string"))


def _as_providers(value: Any, where: str) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [part.strip() for part in value.split(",") if part.strip()]
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise ConfigError(f"{where}: providers must be a list of provider names")
    return tuple(value)
