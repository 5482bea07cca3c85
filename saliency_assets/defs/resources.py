"""The FFmpeg decoder, the ONNX saliency model and the Ray cluster as Dagster resources: one
of each.

Each table's manifest says how its clips are decoded, which model runs and where. The resources
hold run-time overrides for every table (launchpad, run config): a field left unset keeps the
manifest's value. The model is chosen and validated once per process and per model setting;
clip computation itself runs in the core's worker processes (or Ray tasks), each holding its
own session.
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import dagster as dg
from pydantic import PrivateAttr

from saliency_assets.core.contract.config import MaterializeConfig, validate_config
from saliency_assets.core.model.saliency_model import ModelChoice
from saliency_assets.core.run.engine import prepare_model
from saliency_assets.core.run.ray_runner import check_ray_installed

DECODER_KEY = "decoder"
MODEL_KEY = "model"
RAY_KEY = "ray"
RAY_ADDRESS_ENV = "SALIENCY_ASSETS_RAY_ADDRESS"


class FFmpegDecoder(dg.ConfigurableResource):
    """How clips are decoded (unset: the manifest's choice; its default is in-process PyAV)."""

    ffmpeg_bin: str | None = None
    ffprobe_bin: str | None = None
    decode_timeout: float | None = None

    def apply(self, config: MaterializeConfig) -> MaterializeConfig:
        return _override(
            config,
            ffmpeg_bin=self.ffmpeg_bin,
            ffprobe_bin=self.ffprobe_bin,
            decode_timeout=self.decode_timeout,
        )


class SaliencyModelResource(dg.ConfigurableResource):
    """Which ONNX model runs, on which providers, in how many worker processes (unset: the
    manifest's choice)."""

    model_path: str | None = None
    model_id: str | None = None
    providers: list[str] | None = None
    jobs: int | None = None
    _choices: dict = PrivateAttr(default_factory=dict)

    def apply(self, config: MaterializeConfig) -> MaterializeConfig:
        updated = _override(
            config,
            model_path=Path(self.model_path) if self.model_path else None,
            model_id=self.model_id,
            providers=tuple(self.providers) if self.providers else None,
            jobs=self.jobs,
        )
        validate_config(updated)
        return updated

    def choice(self, config: MaterializeConfig) -> ModelChoice:
        """The validated model for an effective config, prepared once per process."""
        cache_key = (
            config.model_path,
            config.model_id,
            config.providers,
            config.ffmpeg_bin,
            config.ffprobe_bin,
        )
        if cache_key not in self._choices:
            self._choices[cache_key] = prepare_model(config)
        return self._choices[cache_key]


class RayCluster(dg.ConfigurableResource):
    """Where clips are computed: local worker processes, or a Ray cluster (unset: the
    manifest's ``ray_address``, else ``$SALIENCY_ASSETS_RAY_ADDRESS`` on the run worker, so a
    deployment can point every table at one cluster without editing manifests)."""

    address: str | None = None

    def apply(self, config: MaterializeConfig) -> MaterializeConfig:
        address = self.address or config.ray_address or os.environ.get(RAY_ADDRESS_ENV) or None
        if address:
            check_ray_installed()
        return replace(config, ray_address=address)


def shared_resources() -> dict[str, dg.ConfigurableResource]:
    return {DECODER_KEY: FFmpegDecoder(), MODEL_KEY: SaliencyModelResource(), RAY_KEY: RayCluster()}


def _override(config: MaterializeConfig, **values) -> MaterializeConfig:
    return replace(config, **{name: value for name, value in values.items() if value is not None})
