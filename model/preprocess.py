"""THE one preprocessing function: a ROI of any size -> the fixed model input.

Training and inference both call `preprocess`/`preprocess_batch` with the `PreprocessConfig` stored in the model
bundle, so the two can never drift apart. The default config is the ifcbUTOPIA contract (its `preprocess_input`):
scale so the long side is `size` (short side floored), pad centred with black (extra pixel at the bottom/right),
then stretch the whole padded canvas min..max to 0..255. ifcbUTOPIA rounded the stretched values to uint8 (OpenCV);
we keep them as float32, a difference of at most half a grey level.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np
from PIL import Image

Normalisation = Literal["minmax", "none"]
_NORMALISATIONS = ("minmax", "none")


@dataclass(frozen=True)
class PreprocessConfig:
    """How a ROI becomes a model input; stored in every bundle.

    normalisation: "minmax" stretches each padded image to 0..255 (ifcbUTOPIA); "none" keeps raw grey levels.
    """

    size: int = 128
    pad_value: int = 0
    normalisation: Normalisation = "minmax"

    def __post_init__(self) -> None:
        if self.size < 1:
            raise ValueError(f"preprocess size must be >= 1, got {self.size}")
        if not 0 <= self.pad_value <= 255:
            raise ValueError(f"pad_value must be a grey level 0..255, got {self.pad_value}")
        if self.normalisation not in _NORMALISATIONS:
            raise ValueError(f"normalisation must be one of {_NORMALISATIONS}, got {self.normalisation!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PreprocessConfig:
        """Build from a bundle's dict; unknown keys are an error so a newer bundle is never misread silently."""
        unknown = set(data) - {"size", "pad_value", "normalisation"}
        if unknown:
            raise ValueError(f"unknown preprocessing parameters {sorted(unknown)}")
        return cls(**data)


def _resize_long_side(image: np.ndarray, size: int) -> np.ndarray:
    """Aspect-preserving bilinear resize so the longer side is exactly `size` (the other floored, at least 1)."""
    height, width = image.shape
    ratio = size / max(height, width)
    new_h, new_w = max(1, int(height * ratio)), max(1, int(width * ratio))
    if (new_h, new_w) == (height, width):
        return image
    return np.asarray(Image.fromarray(image).resize((new_w, new_h), Image.Resampling.BILINEAR))


def preprocess(image: np.ndarray, config: PreprocessConfig) -> np.ndarray:
    """One uint8 (height, width) ROI -> float32 (size, size, 1) model input."""
    if image.ndim != 2 or image.dtype != np.uint8 or image.size == 0:
        raise ValueError(f"expected a non-empty 2-D uint8 image, got dtype {image.dtype} shape {image.shape}")
    size = config.size
    resized = _resize_long_side(image, size)
    canvas = np.full((size, size), config.pad_value, dtype=np.float32)
    top = (size - resized.shape[0]) // 2
    left = (size - resized.shape[1]) // 2
    canvas[top : top + resized.shape[0], left : left + resized.shape[1]] = resized
    if config.normalisation == "minmax":
        low, high = float(canvas.min()), float(canvas.max())
        if high > low:
            canvas = (canvas - low) * np.float32(255.0 / (high - low))
        else:
            canvas[:] = 0.0  # a flat image carries no contrast to stretch (OpenCV's NORM_MINMAX does the same)
    return canvas[:, :, np.newaxis]


def preprocess_batch(images: Sequence[np.ndarray], config: PreprocessConfig) -> np.ndarray:
    """Many ROIs -> float32 (n, size, size, 1), each through `preprocess`."""
    out = np.empty((len(images), config.size, config.size, 1), dtype=np.float32)
    for i, image in enumerate(images):
        out[i] = preprocess(image, config)
    return out


def preprocess_into(images: Sequence[np.ndarray], config: PreprocessConfig, out: np.ndarray) -> None:
    """Many ROIs into the caller's array `out` (n, size, size, 1), each through `preprocess`."""
    for i, image in enumerate(images):
        out[i] = preprocess(image, config)
