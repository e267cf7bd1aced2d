"""THE one preprocessing function: a ROI of any size -> the fixed model input, by the contract a bundle carries.

Training, inference and `ifcbflow extract --model-input` call these functions with the `PreprocessConfig` stored in
the model bundle, so they can never drift apart. The contract is data, in two stages:

- **pixels** (`preprocess`, `preprocess_into`, in the feeders): the grey ROI resized and padded to a
  (size, size, 1) canvas of `pixel_dtype` (uint8, or float32 where the model's own pipeline resizes floats);
- **values** (`model_input`, just before the model): scaling, per-channel normalisation, 1 or 3 channels, channels
  last or first. Grey ROIs have three equal channels, so feeders and batches carry one channel and the copies are
  made last.

The default is the ifcbUTOPIA contract, unchanged: for a uint8 ROI of shape (h, w), exactly what ifcbUTOPIA's
`preprocess_input` does:

1. `ratio = size / max(h, w)`; new shape `int(h * ratio)`, `int(w * ratio)` (each at least 1);
   `cv2.resize(..., interpolation=cv2.INTER_LINEAR)` (also for large ROIs: no area averaging);
2. centred padding with `pad_value` to size x size: `top = (size - new_h) // 2`, the extra pixel of an odd
   margin goes to the bottom (and likewise left/right);
3. `cv2.normalize(canvas, None, 0, 255, cv2.NORM_MINMAX)` over the *padded* canvas (`normalisation="minmax"`),
   rounded to uint8 by OpenCV; `"none"` keeps the raw grey levels.

Its output stays uint8 (size, size, 1): a quarter of float32's bytes on every copy, in training caches and on the
way to the device, where the model casts it first (see `model.architectures.uint8_input`).

The other families' contracts (`PRESETS`; read in each peer's code, checked against it in
tests/test_preprocess_peers.py):

- `whoi` (WHOI `ifcb-inference`, ONNX): the grey ROI stretched to size x size by Pillow's `Image.resize` (its
  default filter, bicubic, which widens its support when it shrinks), copied to 3 channels, channels first,
  divided by 255;
- `smhi` (SMHI `ifcb-pytorch-classify`, torchvision): grey to 3 channels, divided by 255, padded with the mean of
  the four corner pixels by `int((long - short) / 2)` on each side of the short one (an odd difference leaves it
  one pixel short of square), resized to size x size by bilinear interpolation with antialiasing (Pillow's
  bilinear filter on float32, the filter torchvision's antialiased resize reproduces), optionally normalised
  with the training set's mean and standard deviation.

What OpenCV does at the edges of the default (checked in tests/test_model_preprocess.py):
- a flat canvas (max == min, e.g. a square ROI of one grey level, or one equal to `pad_value`) has no contrast to
  stretch: NORM_MINMAX gives scale 0, so the whole input becomes 0. A flat ROI *with* padding is not flat: it
  becomes 255 on a 0 background (with `pad_value` 0);
- a ROI whose shape is already the target shape (long side == size) is copied unchanged by `cv2.resize`;
- `int(h * ratio)` floors a float product, so for some long sides (at 128: 49, 98, 103, 107, 161, ...) the long side
  comes out at size - 1 and gets one pixel of padding at its end; this is the contract, kept for parity.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields, replace
from typing import Any, Literal

import cv2
import numpy as np
from PIL import Image

#: The default library whose resize and rounding define the pixels (ifcbUTOPIA's); "pillow" for the peers whose
#: pipelines resize with Pillow or with torchvision's Pillow-compatible antialiased filters.
METHOD = "opencv"
METHODS = ("opencv", "pillow")
Normalisation = Literal["minmax", "none"]
_NORMALISATIONS = ("minmax", "none")
Resize = Literal["fit", "square", "stretch"]
_RESIZES = ("fit", "square", "stretch")
_INTERPOLATIONS = ("bilinear", "bicubic")
_PADS = ("constant", "corners")
_LAYOUTS = ("last", "first")
_SCALES = ("none", "unit")
_PRECISIONS = ("uint8", "float32")
#: The keys every bundle has written since format version 2; the others are written only where they differ from
#: the default, so a default contract keeps its bytes (and its bundles their hashes).
_LEGACY_KEYS = ("size", "pad_value", "normalisation", "method")


@dataclass(frozen=True)
class PreprocessConfig:
    """How a ROI becomes a model input (the preprocessing contract); stored in every bundle.

    Pixels: `resize` "fit" (long side to `size`, aspect kept, centred padding), "square" (pad the short side by
    `int((long - short) / 2)` on each side, then resize to size x size) or "stretch" (size x size, aspect lost);
    `interpolation` "bilinear" or "bicubic" by `method` ("opencv": no antialiasing; "pillow": the filter widens
    when it shrinks); `pad` "constant" (`pad_value`) or "corners" (the mean of the ROI's four corner pixels);
    `precision` the dtype pixels are resized in ("float32" keeps the fractions a float pipeline keeps);
    `normalisation` "minmax" stretches each padded uint8 image to 0..255 (ifcbUTOPIA), "none" keeps grey levels.
    Values: `scale` "none" (grey levels 0..255) or "unit" (divided by 255); `mean`/`std` per channel (one value
    for all, or one per channel) subtracted and divided after scaling; `channels` 1 or 3 (copies of the grey);
    `layout` "last" (size, size, C) or "first" (C, size, size).
    Raises ValueError for a value outside these.
    """

    size: int = 128
    pad_value: int = 0
    normalisation: Normalisation = "minmax"
    method: str = METHOD
    resize: Resize = "fit"
    interpolation: str = "bilinear"
    pad: str = "constant"
    precision: str = "uint8"
    channels: int = 1
    layout: str = "last"
    scale: str = "none"
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        if self.size < 1:
            raise ValueError(f"preprocess size must be >= 1, got {self.size}")
        if not 0 <= self.pad_value <= 255:
            raise ValueError(f"pad_value must be a grey level 0..255, got {self.pad_value}")
        for name, allowed in (
            ("normalisation", _NORMALISATIONS), ("method", METHODS), ("resize", _RESIZES),
            ("interpolation", _INTERPOLATIONS), ("pad", _PADS), ("precision", _PRECISIONS), ("layout", _LAYOUTS),
            ("scale", _SCALES),
        ):  # fmt: skip
            if getattr(self, name) not in allowed:
                raise ValueError(f"preprocessing {name} must be one of {allowed}, got {getattr(self, name)!r}")
        if self.channels not in (1, 3):
            raise ValueError(f"preprocessing channels must be 1 or 3, got {self.channels}")
        if self.normalisation == "minmax" and self.precision != "uint8":
            raise ValueError("minmax normalisation stretches uint8 pixels: it needs precision 'uint8'")
        for name in ("mean", "std"):
            values = getattr(self, name)
            if values is not None:
                object.__setattr__(self, name, tuple(float(v) for v in values))
                if len(getattr(self, name)) not in (1, self.channels):
                    raise ValueError(f"preprocessing {name} needs 1 or {self.channels} values, got {values}")
        if (self.mean is None) != (self.std is None):
            raise ValueError("preprocessing mean and std go together: give both or neither")
        if self.std is not None and min(self.std) <= 0:
            raise ValueError(f"preprocessing std must be positive, got {self.std}")

    @property
    def pixel_dtype(self) -> np.dtype:
        """The dtype of the pixel stage (feeders, batches): uint8, or float32 for a float contract."""
        return np.dtype(self.precision)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """One model input's shape: (size, size, channels) or (channels, size, size)."""
        if self.layout == "first":
            return (self.channels, self.size, self.size)
        return (self.size, self.size, self.channels)

    @property
    def input_dtype(self) -> np.dtype:
        """The dtype of the model input: the pixels' when no value is scaled, else float32."""
        return self.pixel_dtype if self.scale == "none" and self.mean is None else np.dtype(np.float32)

    def describe(self) -> str:
        """The contract in a few words, for messages."""
        order = "channels first" if self.layout == "first" else "channels last"
        return f"size {self.size}, {self.channels} channel(s), {order}, {self.input_dtype} input"

    def to_dict(self) -> dict[str, Any]:
        """The bundle's dict: the four keys of every bundle, the others only where they are not the default."""
        default = PreprocessConfig()
        data = asdict(self)
        return {
            key: list(value) if isinstance(value, tuple) else value
            for key, value in data.items()
            if key in _LEGACY_KEYS or value != getattr(default, key)
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PreprocessConfig:
        """Build from a bundle's dict (missing keys: the ifcbUTOPIA default); unknown keys are an error so a newer
        bundle is never misread silently."""
        unknown = set(data) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(f"unknown preprocessing parameters {sorted(unknown)}")
        if "method" not in data:
            raise ValueError("preprocessing parameters lack the method")
        return cls(**data)


#: The named contracts of the three families (`--preprocess NAME`); the size comes from the model's input.
PRESETS: dict[str, PreprocessConfig] = {
    "utopia": PreprocessConfig(),
    "whoi": PreprocessConfig(
        size=299, normalisation="none", method="pillow", resize="stretch", interpolation="bicubic", channels=3,
        layout="first", scale="unit",
    ),
    "smhi": PreprocessConfig(
        size=224, normalisation="none", method="pillow", resize="square", pad="corners", precision="float32",
        channels=3, layout="first", scale="unit",
    ),
}  # fmt: skip


def preset(name: str, **overrides: Any) -> PreprocessConfig:
    """The named contract with some of its parts replaced (e.g. `size`, `mean`, `std`); ValueError if unknown."""
    if name not in PRESETS:
        raise ValueError(f"unknown preprocessing preset {name!r}; known: {', '.join(PRESETS)}")
    return replace(PRESETS[name], **overrides)


def resized_shape(height: int, width: int, size: int) -> tuple[int, int]:
    """The (rows, columns) a (height, width) ROI is resized to: the contract's floored products, at least 1."""
    ratio = size / max(height, width)
    return max(1, int(height * ratio)), max(1, int(width * ratio))


def _check(image: np.ndarray) -> None:
    if image.ndim != 2 or image.dtype != np.uint8 or image.size == 0:
        raise ValueError(f"expected a non-empty 2-D uint8 image, got dtype {image.dtype} shape {image.shape}")


_CV2 = {"bilinear": cv2.INTER_LINEAR, "bicubic": cv2.INTER_CUBIC}
_PIL = {"bilinear": Image.Resampling.BILINEAR, "bicubic": Image.Resampling.BICUBIC}


def _resize(image: np.ndarray, config: PreprocessConfig, dst: np.ndarray) -> None:
    """Resize `image` into `dst` (a view of the canvas, of the canvas' dtype) with the contract's library."""
    if image.dtype != dst.dtype:
        image = image.astype(dst.dtype)
    height, width = dst.shape
    if config.method == "opencv":
        cv2.resize(image, (width, height), dst=dst, interpolation=_CV2[config.interpolation])
    else:  # Pillow: mode "L" for uint8 (rounded, clipped), "F" for float32
        dst[...] = np.asarray(Image.fromarray(image).resize((width, height), _PIL[config.interpolation]))


def _pad_value(image: np.ndarray, config: PreprocessConfig) -> float:
    """The padding's grey level: the constant, or the mean of the four corner pixels (rounded for uint8)."""
    if config.pad == "constant":
        return config.pad_value
    corners = float(image[0, 0]) + float(image[-1, 0]) + float(image[0, -1]) + float(image[-1, -1])
    return corners / 4 if config.precision == "float32" else float(round(corners / 4))


def _fill(image: np.ndarray, config: PreprocessConfig, canvas: np.ndarray) -> None:
    """Write one ROI's pixel stage into `canvas`, a (size, size) view with contiguous rows.

    OpenCV writes straight into views of the canvas (a `dst` of the right shape and type is used in place), so no
    intermediate image is allocated on the default contract.
    """
    _check(image)
    size = config.size
    if config.resize == "stretch":
        _resize(image, config, canvas)
    elif config.resize == "square":
        height, width = image.shape
        side = max(height, width)
        top, left = int((side - height) / 2), int((side - width) / 2)
        padded = np.full((height + 2 * top, width + 2 * left), _pad_value(image, config), dtype=canvas.dtype)
        padded[top : top + height, left : left + width] = image
        _resize(padded, config, canvas)
    else:
        new_h, new_w = resized_shape(*image.shape, size)
        top, left = (size - new_h) // 2, (size - new_w) // 2
        bottom, right = top + new_h, left + new_w
        _resize(image, config, canvas[top:bottom, left:right])
        pad = _pad_value(image, config)
        canvas[:top] = pad
        canvas[bottom:] = pad
        canvas[top:bottom, :left] = pad
        canvas[top:bottom, right:] = pad
    if config.normalisation == "minmax":
        cv2.normalize(canvas, canvas, 0, 255, cv2.NORM_MINMAX)


def preprocess(image: np.ndarray, config: PreprocessConfig) -> np.ndarray:
    """One uint8 (height, width) ROI -> a new (size, size, 1) array of its pixel stage (`config.pixel_dtype`)."""
    out = np.empty((config.size, config.size, 1), dtype=config.pixel_dtype)
    _fill(image, config, out[:, :, 0])
    return out


def preprocess_into(images: Sequence[np.ndarray], config: PreprocessConfig, out: np.ndarray) -> np.ndarray:
    """Many ROIs -> the caller's (len(images), size, size, 1) array of `config.pixel_dtype`, filled and returned.

    For callers that fill large batch buffers (e.g. a slice `buffer[:n]` of one preallocated array) without a copy
    per ROI or per batch. Each image plane must be C-contiguous, as in any C-ordered array or slice of its first axis.
    """
    size = config.size
    expected = (len(images), size, size, 1)
    if out.dtype != config.pixel_dtype or out.shape != expected:
        raise ValueError(f"out must be {config.pixel_dtype} of shape {expected}, got {out.dtype} {out.shape}")
    if len(images) and out.strides[1:3] != (size * out.itemsize, out.itemsize):
        raise ValueError(f"out's image planes must be C-contiguous (strides {out.strides})")
    for i, image in enumerate(images):
        _fill(image, config, out[i, :, :, 0])
    return out


def preprocess_batch(images: Sequence[np.ndarray], config: PreprocessConfig) -> np.ndarray:
    """Many ROIs -> a new (n, size, size, 1) pixel-stage array (`preprocess_into` on a fresh array)."""
    out = np.empty((len(images), config.size, config.size, 1), dtype=config.pixel_dtype)
    return preprocess_into(images, config, out)


def model_input(pixels: np.ndarray, config: PreprocessConfig) -> np.ndarray:
    """The value stage: a pixel batch (n, size, size, 1) -> the model's input (n, *config.input_shape).

    The ifcbUTOPIA contract (1 channel, last, no scaling) returns `pixels` itself, uint8; otherwise float32:
    divided by 255 for `scale="unit"`, then `(x - mean) / std` per channel, the grey copied to 3 channels, moved
    to the front for `layout="first"`.
    """
    if config.input_dtype == config.pixel_dtype and config.channels == 1 and config.layout == "last":
        return pixels
    values = pixels.astype(config.input_dtype, copy=False)
    if config.scale == "unit":
        values = values / np.float32(255)
    if config.channels == 3:
        values = np.broadcast_to(values, (*values.shape[:3], 3))
    if config.mean is not None and config.std is not None:
        values = (values - np.asarray(config.mean, np.float32)) / np.asarray(config.std, np.float32)
    if config.layout == "first":
        values = values.transpose(0, 3, 1, 2)
    return np.ascontiguousarray(values, dtype=config.input_dtype)
