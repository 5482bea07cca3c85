"""Decoded frames to model input tensors.

Compatible mode reproduces the reference maths exactly (REFERENCE.md section 8.2): BT.709
limited-range YUV to RGB in float32 with nearest-neighbour chroma, ImageNet normalisation,
zero padding to a multiple of 32. In inference-size mode FFmpeg has already produced RGB
(honouring the stream's colour tags), so only normalisation and padding remain; that padding
repeats the edge rather than adding a grey border.
"""

from __future__ import annotations

import numpy as np

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)
PAD_MULTIPLE = 32


def yuv420p_to_rgb(luma: np.ndarray, u_plane: np.ndarray, v_plane: np.ndarray) -> np.ndarray:
    """float32 (H, W, 3) RGB in [0, 1] by the reference's BT.709 limited-range maths."""
    height, width = luma.shape
    y = (luma.astype(np.float32) - 16.0) / 219.0
    u = _upsample_nearest((u_plane.astype(np.float32) - 128.0) / 224.0, height, width)
    v = _upsample_nearest((v_plane.astype(np.float32) - 128.0) / 224.0, height, width)
    red = y + 1.5748 * v
    green = y - 0.1873 * u - 0.4681 * v
    blue = y + 1.8556 * u
    return np.clip(np.stack([red, green, blue], axis=-1), 0.0, 1.0)


def rgb24_to_rgb(rgb: np.ndarray) -> np.ndarray:
    """float32 (H, W, 3) in [0, 1] from uint8 RGB."""
    return rgb.astype(np.float32) / np.float32(255.0)


def model_input(rgb: np.ndarray, pad_mode: str = "zero") -> np.ndarray:
    """ImageNet-normalised NCHW float32 tensor, padded bottom/right to a multiple of 32.

    ``pad_mode="zero"`` pads with 0 in normalised space (the reference); ``"edge"`` repeats
    the last row and column.
    """
    normalised = (rgb - IMAGENET_MEAN) / IMAGENET_STD
    tensor = np.ascontiguousarray(normalised.transpose(2, 0, 1)[np.newaxis], dtype=np.float32)
    return pad_to_multiple(tensor, PAD_MULTIPLE, pad_mode)


def pad_to_multiple(tensor: np.ndarray, multiple: int, pad_mode: str = "zero") -> np.ndarray:
    height, width = tensor.shape[-2:]
    pad_height = -height % multiple
    pad_width = -width % multiple
    if not pad_height and not pad_width:
        return tensor
    padding = ((0, 0), (0, 0), (0, pad_height), (0, pad_width))
    if pad_mode == "edge":
        return np.pad(tensor, padding, mode="edge")
    return np.pad(tensor, padding, mode="constant", constant_values=0.0)


def _upsample_nearest(plane: np.ndarray, height: int, width: int) -> np.ndarray:
    return np.repeat(np.repeat(plane, 2, axis=0), 2, axis=1)[:height, :width]
