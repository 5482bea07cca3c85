"""Config validation: every key type- and range-checked, errors naming the key."""

import pytest

from saliency_assets.core.contract.config import (
    MaterializeConfig,
    config_from_mapping,
    parse_inference_size,
    validate_config,
)
from saliency_assets.core.contract.errors import ConfigError


def test_defaults_match_the_reference():
    config = MaterializeConfig()
    assert (config.path_column, config.width_column, config.height_column) == (
        "src",
        "width",
        "height",
    )
    assert (config.max_frames, config.frame_samples) == (8, 8)
    assert (config.temporal_aggregator, config.ema_alpha) == ("mean", 0.6)
    assert config.status_column == "saliency_status"
    assert (config.sampling, config.inference_size) == ("head", None)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"max_frames": "8"}, "max_frames must be an integer"),
        ({"max_frames": 0}, "max_frames must be at least 1"),
        ({"frame_samples": -3}, "frame_samples must be at least 1"),
        ({"ema_alpha": 0}, r"ema_alpha must be in \(0, 1\]"),
        ({"ema_alpha": 1.5}, r"ema_alpha must be in \(0, 1\]"),
        ({"temporal_aggregator": "median"}, "temporal_aggregator 'median'"),
        ({"overwrite": "yes"}, "overwrite must be true or false"),
        ({"sampling": "random"}, "sampling must be one of"),
        ({"inference_size": 4}, "inference_size must be"),
        ({"default_pix_fmt": "nv12"}, "default_pix_fmt must be one of"),
        ({"decode_timeout": -1}, "decode_timeout must be a positive"),
        ({"max_frames": True}, "max_frames must be an integer"),
        ({"bogus": 1}, r"unknown keys \['bogus'\]"),
    ],
)
def test_bad_values_name_the_key(values, message):
    with pytest.raises(ConfigError, match=message):
        config_from_mapping(values, "table 'x'")


def test_valid_mapping_builds_a_config():
    config = config_from_mapping(
        {
            "root": "clips",
            "inference_size": 288,
            "ema_alpha": 1,
            "providers": "CPUExecutionProvider",
        },
        "defaults",
    )
    assert str(config.root) == "clips"
    assert config.inference_size == 288
    assert config.ema_alpha == 1.0
    assert config.providers == ("CPUExecutionProvider",)


def test_inference_size_accepts_native_and_integers():
    assert parse_inference_size("native") is None
    assert parse_inference_size("288") == 288
    with pytest.raises(ConfigError):
        parse_inference_size("big")


def test_validate_rejects_empty_path_column():
    with pytest.raises(ConfigError, match="path_column"):
        validate_config(MaterializeConfig(path_column=""))
