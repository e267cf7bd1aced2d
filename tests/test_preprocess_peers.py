"""Each preset against the peer's own preprocessing, on real ROIs: the model inputs ifcbflow makes from a bin's ROIs
and those the peer's pipeline makes from the same ROIs; the largest difference is asserted (and stated in the
README).

- utopia: ifcbUTOPIA's `preprocess_input` written the plain way with OpenCV (`preprocess_support.reference`);
- whoi: WHOI `ifcb-inference`'s `IfcbBinImageTransformer.transform_bin_image` with its own library (Pillow), here;
- smhi: SMHI `ifcb-pytorch-classify`'s `dataset_squarepad` transform, recorded with PyTorch into
  `peer_reference/smhi.npz` (how: `peer_reference/make_smhi.py`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from preprocess_support import bin_rois_by_bin, reference

from model.preprocess import model_input, preprocess_batch, preset

SMHI = Path(__file__).parent / "peer_reference" / "smhi.npz"


@pytest.fixture(scope="module")
def rois(ifcb_data: Path) -> dict[tuple[str, int], np.ndarray]:
    return {(bin_id, number): image for bin_id, pairs in bin_rois_by_bin(ifcb_data) for number, image in pairs}


def _inputs(images: list[np.ndarray], name: str, **overrides: object) -> np.ndarray:
    config = preset(name, **overrides)
    return model_input(preprocess_batch(images, config), config)


def test_utopia_is_ifcbutopia_bit_for_bit(rois: dict) -> None:
    images = list(rois.values())
    ours = _inputs(images, "utopia")
    assert ours.shape == (len(images), 128, 128, 1) and ours.dtype == np.uint8
    np.testing.assert_array_equal(ours[..., 0], np.stack([reference(image) for image in images]))


def _whoi(image: np.ndarray, size: int) -> np.ndarray:
    """WHOI's transform, step by step as `transform_bin_image` runs it (no normalisation: its default)."""
    img = Image.fromarray(image).resize((size, size)).convert("RGB")
    return np.transpose(np.array(img), (2, 0, 1)).astype(np.float32) / 255.0


@pytest.mark.parametrize("size", [299, 64])
def test_whoi_is_ifcb_inference_exactly(rois: dict, size: int) -> None:
    images = list(rois.values())
    ours = _inputs(images, "whoi", size=size)
    assert ours.shape == (len(images), 3, size, size) and ours.dtype == np.float32
    np.testing.assert_array_equal(ours, np.stack([_whoi(image, size) for image in images]))  # largest difference 0


def test_smhi_matches_ifcb_pytorch_classify(rois: dict) -> None:
    recorded = np.load(SMHI)
    keys = list(zip(recorded["bin"].tolist(), recorded["roi_number"].tolist(), strict=True))
    expected = np.repeat(recorded["inputs"][:, None], 3, axis=1)  # the three equal channels
    ours = _inputs([rois[key] for key in keys], "smhi", size=int(recorded["size"]))
    assert ours.shape == expected.shape and ours.dtype == np.float32
    difference = np.abs(ours - expected).max()
    assert difference < 5e-6, difference  # measured 3.3e-6: torch's antialiased bilinear vs Pillow's, float32
    # with the training set's statistics (Normalize: (x - mean) / std, one value for the three channels)
    mean, std = 0.7, 0.08
    normalised = _inputs([rois[key] for key in keys], "smhi", size=int(recorded["size"]), mean=(mean,), std=(std,))
    assert np.abs(normalised - (expected - np.float32(mean)) / np.float32(std)).max() < 6e-5  # measured 4.2e-5
