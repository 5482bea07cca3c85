"""The embedded default saliency model shipped with the package.

`DEFAULT_MODEL_PATH` is the ONNX file built by `saliency_assets.models.build_default_model`
(`python -m saliency_assets.models.build_default_model` rebuilds it byte for byte).
"""

from pathlib import Path

DEFAULT_MODEL_NAME = "centre_surround_saliency_v1"
DEFAULT_MODEL_PATH: Path = Path(__file__).with_name(f"{DEFAULT_MODEL_NAME}.onnx")

__all__ = ["DEFAULT_MODEL_NAME", "DEFAULT_MODEL_PATH"]
