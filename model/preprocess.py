"""THE one preprocessing function: a ROI of any size -> the fixed uint8 model input (the ifcbUTOPIA contract, OpenCV).

Training and inference both call these functions with the `PreprocessConfig` stored in the model bundle, so the two
can never drift apart. For a uint8 ROI of shape (h, w), exactly what ifcbUTOPIA's `preprocess_input` does:

1. `ratio = size / max(h, w)`; new shape `int(h * ratio)`, `int(w * ratio)` (each at least 1);
   `cv2.resize(..., interpolation=cv2.INTER_LINEAR)` (also for large ROIs: no area averaging);
2. centred padding with `pad_value` to size x size: `top = (size - new_h) // 2`, the extra pixel of an odd
   margin goes to the bottom (and likewise left/right);
3. `cv2.normalize(canvas, None, 0, 255, cv2.NORM_MINMAX)` over the *padded* canvas (`normalisation="minmax"`),
   rounded to uint8 by OpenCV; `"none"` keeps the raw grey levels.

The output stays uint8 (size, size, 1): a quarter of float32's bytes on every copy, in training caches and on the
way to the device, where the model casts it first (see `model.architectures.uint8_input`).

What OpenCV does at the edges (checked in tests/test_model_preprocess.py):
- a flat canvas (max == min, e.g. a square ROI of one grey level, or one equal to `pad_value`) has no contrast to
  stretch: NORM_MINMAX gives scale 0, so the whole input becomes 0. A flat ROI *with* padding is not flat: it
  becomes 255 on a 0 background (with `pad_value` 0);
- a ROI whose shape is already the target shape (long side == size) is copied unchanged by `cv2.resize`;
- `int(h * ratio)` floors a float product, so for some long sides (at 128: 49, 98, 103, 107, 161, ...) the long side
  comes out at size - 1 and gets one pixel of padding at its end; this is the contract, kept for parity.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

import cv2
import numpy as np

#: Recorded in every bundle: the library whose resize and rounding define the pixels a model was trained on.
METHOD = "opencv"
Normalisation = Literal["minmax", "none"]
_NORMALISATIONS = ("minmax", "none")


@dataclass(frozen=True)
class PreprocessConfig:
    """How a ROI becomes a model input; stored in every bundle.

    normalisation: "minmax" stretches each padded image to 0..255 (ifcbUTOPIA); "none" keeps raw grey levels.
    method: the implementation that defines the pixels; only OpenCV exists (older Pillow bundles are refused).
    """

    size: int = 128
    pad_value: int = 0
    normalisation: Normalisation = "minmax"
    method: str = METHOD

    def __post_init__(self) -> None:
        if self.size < 1:
            raise ValueError(f"preprocess size must be >= 1, got {self.size}")
        if not 0 <= self.pad_value <= 255:
            raise ValueError(f"pad_value must be a grey level 0..255, got {self.pad_value}")
        if self.normalisation not in _NORMALISATIONS:
            raise ValueError(f"normalisation must be one of {_NORMALISATIONS}, got {self.normalisation!r}")
        if self.method != METHOD:
            raise ValueError(f"preprocessing method must be {METHOD!r}, got {self.method!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PreprocessConfig:
        """Build from a bundle's dict; unknown keys are an error so a newer bundle is never misread silently."""
        unknown = set(data) - {"size", "pad_value", "normalisation", "method"}
        if unknown:
            raise ValueError(f"unknown preprocessing parameters {sorted(unknown)}")
        if "method" not in data:
            raise ValueError("preprocessing parameters lack the method")
        return cls(**data)


def resized_shape(height: int, width: int, size: int) -> tuple[int, int]:
    """The (rows, columns) a (height, width) ROI is resized to: the contract's floored products, at least 1."""
    ratio = size / max(height, width)
    return max(1, int(height * ratio)), max(1, int(width * ratio))


def _check(image: np.ndarray) -> None:
    if image.ndim != 2 or image.dtype != np.uint8 or image.size == 0:
        raise ValueError(f"expected a non-empty 2-D uint8 image, got dtype {image.dtype} shape {image.shape}")


def _fill(image: np.ndarray, config: PreprocessConfig, canvas: np.ndarray) -> None:
    """Write one ROI's model input into `canvas`, a (size, size) uint8 view with contiguous rows.

    OpenCV writes straight into views of the canvas (a `dst` of the right shape and type is used in place), so no
    intermediate image is allocated.
    """
    _check(image)
    size = config.size
    new_h, new_w = resized_shape(*image.shape, size)
    top, left = (size - new_h) // 2, (size - new_w) // 2
    bottom, right = top + new_h, left + new_w
    cv2.resize(image, (new_w, new_h), dst=canvas[top:bottom, left:right], interpolation=cv2.INTER_LINEAR)
    pad = config.pad_value
    canvas[:top] = pad
    canvas[bottom:] = pad
    canvas[top:bottom, :left] = pad
    canvas[top:bottom, right:] = pad
    if config.normalisation == "minmax":
        cv2.normalize(canvas, canvas, 0, 255, cv2.NORM_MINMAX)


def preprocess(image: np.ndarray, config: PreprocessConfig) -> np.ndarray:
    """One uint8 (height, width) ROI -> a new uint8 (size, size, 1) model input."""
    out = np.empty((config.size, config.size, 1), dtype=np.uint8)
    _fill(image, config, out[:, :, 0])
    return out


def preprocess_into(images: Sequence[np.ndarray], config: PreprocessConfig, out: np.ndarray) -> np.ndarray:
    """Many ROIs -> the caller's uint8 (len(images), size, size, 1) array, filled in place and returned.

    For callers that fill large batch buffers (e.g. a slice `buffer[:n]` of one preallocated array) without a copy
    per ROI or per batch. Each image plane must be C-contiguous, as in any C-ordered array or slice of its first axis.
    """
    size = config.size
    expected = (len(images), size, size, 1)
    if out.dtype != np.uint8 or out.shape != expected:
        raise ValueError(f"out must be uint8 of shape {expected}, got {out.dtype} {out.shape}")
    if len(images) and out.strides[1:3] != (size, 1):
        raise ValueError(f"out's image planes must be C-contiguous (strides {out.strides})")
    for i, image in enumerate(images):
        _fill(image, config, out[i, :, :, 0])
    return out


def preprocess_batch(images: Sequence[np.ndarray], config: PreprocessConfig) -> np.ndarray:
    """Many ROIs -> a new uint8 (n, size, size, 1) array (`preprocess_into` on a fresh array)."""
    out = np.empty((len(images), config.size, config.size, 1), dtype=np.uint8)
    return preprocess_into(images, config, out)
