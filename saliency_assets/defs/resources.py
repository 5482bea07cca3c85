"""The FFmpeg decoder and the ONNX saliency model as Dagster resources, one pair per table.

Their fields start from the table's manifest config and can be changed per run (launchpad, run
config). The model is chosen and validated once per process, in ``setup_for_execution``; clip
computation itself runs in the core's worker processes, each holding its own session.
"""

from __future__ import annotations

import os
from dataclasses import replace

import dagster as dg
from pydantic import PrivateAttr

from saliency_assets.core.config import MaterializeConfig, validate_config
from saliency_assets.core.engine import prepare_model
from saliency_assets.core.model import ModelChoice
from saliency_assets.core.ray_runner import check_ray_installed


class FFmpegDecoder(dg.ConfigurableResource):
    """How clips are decoded: in-process PyAV unless a binary is named."""

    ffmpeg_bin: str | None = None
    ffprobe_bin: str | None = None
    decode_timeout: float | None = 120.0

    def apply(self, config: MaterializeConfig) -> MaterializeConfig:
        return replace(
            config,
            ffmpeg_bin=self.ffmpeg_bin,
            ffprobe_bin=self.ffprobe_bin,
            decode_timeout=self.decode_timeout,
        )


class SaliencyModelResource(dg.ConfigurableResource):
    """Which ONNX model runs, on which execution providers, in how many worker processes."""

    model_path: str | None = None
    model_id: str | None = None
    providers: list[str] = ["CPUExecutionProvider"]
    jobs: int | None = None
    _choice: ModelChoice | None = PrivateAttr(default=None)

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        self._choice = prepare_model(self.apply(MaterializeConfig()))

    def apply(self, config: MaterializeConfig) -> MaterializeConfig:
        from pathlib import Path

        updated = replace(
            config,
            model_path=Path(self.model_path) if self.model_path else None,
            model_id=self.model_id,
            providers=tuple(self.providers),
            jobs=self.jobs,
        )
        validate_config(updated)
        return updated

    @property
    def choice(self) -> ModelChoice:
        if self._choice is None:
            self._choice = prepare_model(self.apply(MaterializeConfig()))
        return self._choice


class RayCluster(dg.ConfigurableResource):
    """Where clips are computed: local worker processes, or the Ray cluster at ``address``.

    ``address`` starts from the manifest's ``ray_address``; when empty, a deployment points
    every table at a cluster with ``$SALIENCY_ASSETS_RAY_ADDRESS`` on its run workers.
    """

    address: str | None = None

    def apply(self, config: MaterializeConfig) -> MaterializeConfig:
        address = self.address or os.environ.get(RAY_ADDRESS_ENV) or None
        if address:
            check_ray_installed()
        return replace(config, ray_address=address)


RAY_ADDRESS_ENV = "SALIENCY_ASSETS_RAY_ADDRESS"


def table_resources(config: MaterializeConfig) -> tuple[FFmpegDecoder, SaliencyModelResource]:
    """The resource pair configured from a table's manifest config."""
    decoder = FFmpegDecoder(
        ffmpeg_bin=config.ffmpeg_bin,
        ffprobe_bin=config.ffprobe_bin,
        decode_timeout=config.decode_timeout,
    )
    model = SaliencyModelResource(
        model_path=None if config.model_path is None else str(config.model_path),
        model_id=config.model_id,
        providers=list(config.providers),
        jobs=config.jobs,
    )
    return decoder, model
