"""THE preprocessing function: the ifcbUTOPIA contract on hand-computed cases, parity with a straightforward OpenCV
implementation on real ROIs, the batch forms, and training == inference on real ROIs."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import keras
import numpy as np
import pytest
from preprocess_support import bin_rois, labelled_rois, reference

from model.architectures import uint8_image_input
from model.bundle import Bundle
from model.inference.predictors import predict
from model.preprocess import PreprocessConfig, preprocess, preprocess_batch, preprocess_into, resized_shape
from model.training.data import load_image_folder
from model.training.train import make_dataset

RAW = {"normalisation": "none"}


@pytest.fixture(scope="module")
def real_rois(utopia_data: Path, ifcb_data: Path) -> list[np.ndarray]:
    """The shared labelled ROIs and every ROI of the shared bins."""
    return labelled_rois(utopia_data) + bin_rois(ifcb_data)


def test_wide_roi_even_padding_centred() -> None:
    image = np.full((20, 80), 200, dtype=np.uint8)  # ratio 0.4: 8 x 32 rows x columns, 24 rows of padding: 12 + 12
    out = preprocess(image, PreprocessConfig(size=32, **RAW))
    assert out.shape == (32, 32, 1) and out.dtype == np.uint8
    expected = np.zeros((32, 32), np.uint8)
    expected[12:20, :] = 200
    np.testing.assert_array_equal(out[:, :, 0], expected)


def test_odd_padding_puts_the_extra_pixel_after() -> None:
    # 64 x 23 at 32: ratio 0.5, int(11.5) = 11 columns, 21 of padding: 10 before, 11 after
    out = preprocess(np.full((64, 23), 90, np.uint8), PreprocessConfig(size=32, pad_value=7, **RAW))[:, :, 0]
    expected = np.full((32, 32), 7, np.uint8)
    expected[:, 10:21] = 90
    np.testing.assert_array_equal(out, expected)
    # 64 x 21: int(10.5) = 10 columns, 22 of padding: 11 + 11
    out = preprocess(np.full((64, 21), 90, np.uint8), PreprocessConfig(size=32, pad_value=7, **RAW))[:, :, 0]
    assert np.flatnonzero(out[0] != 7).tolist() == list(range(11, 21))


def test_minmax_runs_over_the_padded_canvas_and_rounds_to_uint8() -> None:
    # 10 x 20 at 40 (smaller than the target: upscaled x2). Rows 0-4 are 100, rows 5-9 are 220; bilinear gives
    # 100 x 9, then 100 + 0.25 * 120 = 130 and 100 + 0.75 * 120 = 190, then 220 x 9, at rows 10..29.
    image = np.repeat(np.array([100] * 5 + [220] * 5, np.uint8)[:, None], 20, axis=1)
    content = [100] * 9 + [130, 190] + [220] * 9
    raw = preprocess(image, PreprocessConfig(size=40, **RAW))[:, :, 0]
    assert raw[10:30, 0].tolist() == content and not raw[:10].any() and not raw[30:].any()
    stretched = preprocess(image, PreprocessConfig(size=40))[:, :, 0]  # padding 0 is the minimum: v * 255 / 220
    assert stretched[10:30, 7].tolist() == [116] * 9 + [151, 220] + [255] * 9
    assert not stretched[:10].any()


def test_flat_rois() -> None:
    """NORM_MINMAX of a flat canvas has scale 0: all zeros. With padding a flat ROI is not flat any more."""
    assert not preprocess(np.full((64, 64), 130, np.uint8), PreprocessConfig(size=64)).any()
    assert not preprocess(np.full((20, 64), 9, np.uint8), PreprocessConfig(size=64, pad_value=9)).any()
    out = preprocess(np.full((32, 64), 130, np.uint8), PreprocessConfig(size=64))[:, :, 0]
    expected = np.zeros((64, 64), np.uint8)
    expected[16:48] = 255
    np.testing.assert_array_equal(out, expected)


def test_one_pixel_wide_roi() -> None:
    # 8 x 1 at 4: ratio 0.5, 4 rows and max(1, int(0.5)) = 1 column at (4 - 1) // 2 = 1; each output row is the mean
    # of source rows 2k + 0.5 +- 0.5: [5, 25, 45, 65]; stretched by 255 / 65: [20, 98, 177, 255]
    image = np.arange(0, 80, 10, dtype=np.uint8)[:, None]
    raw = preprocess(image, PreprocessConfig(size=4, **RAW))[:, :, 0]
    np.testing.assert_array_equal(raw, [[0, 5, 0, 0], [0, 25, 0, 0], [0, 45, 0, 0], [0, 65, 0, 0]])
    stretched = preprocess(image, PreprocessConfig(size=4))[:, :, 0]
    assert stretched[:, 1].tolist() == [20, 98, 177, 255] and not np.delete(stretched, 1, axis=1).any()


def test_roi_larger_than_the_target_on_both_sides() -> None:
    # 256 x 512 at 128: ratio 1/4, 64 x 128 at rows 32..95. Columns hold 2 * (x // 4), so output column d samples
    # source columns 4d + 1 and 4d + 2 (both 2d): no averaging across blocks.
    image = np.tile((2 * (np.arange(512) // 4)).astype(np.uint8), (256, 1))
    raw = preprocess(image, PreprocessConfig(**RAW))[:, :, 0]
    np.testing.assert_array_equal(raw[32:96], np.tile(2 * np.arange(128), (64, 1)))
    assert not raw[:32].any() and not raw[96:].any()
    stretched = preprocess(image, PreprocessConfig())[:, :, 0]  # max 254 -> 255: round(2d * 255 / 254), no ties
    assert stretched[50].tolist() == [round(2 * d * 255 / 254) for d in range(128)]


def test_roi_at_the_target_size_is_copied_unchanged() -> None:
    image = np.random.default_rng(1).integers(0, 256, (128, 50), dtype=np.uint8)
    out = preprocess(image, PreprocessConfig(**RAW))[:, :, 0]
    np.testing.assert_array_equal(out[:, 39:89], image)  # (128 - 50) // 2 = 39
    assert not out[:, :39].any() and not out[:, 89:].any()


def test_floored_long_side_is_part_of_the_contract() -> None:
    """128 / 98 * 98 = 127.99999999999999: int() gives 127 rows, and the spare row is padding at the bottom."""
    assert resized_shape(98, 30, 128) == (127, 39) and resized_shape(30, 98, 128) == (39, 127)
    out = preprocess(np.full((98, 30), 60, np.uint8), PreprocessConfig(**RAW))[:, :, 0]
    assert out[:127, 44].all() and not out[127].any()


def test_parity_with_a_plain_opencv_implementation_on_real_rois(real_rois: list[np.ndarray]) -> None:
    assert len(real_rois) > 100
    for config in (PreprocessConfig(), PreprocessConfig(size=64, pad_value=20)):
        ours = preprocess_batch(real_rois, config)[..., 0].astype(np.int16)
        theirs = np.stack([reference(image, config.size, config.pad_value) for image in real_rois]).astype(np.int16)
        difference = np.abs(ours - theirs)
        assert difference.max() <= 1 and np.mean(difference > 0) < 0.01


def test_batch_forms_fill_the_callers_array(real_rois: list[np.ndarray]) -> None:
    config = PreprocessConfig(size=64)
    buffer = np.full((50, 64, 64, 1), 77, np.uint8)
    filled = preprocess_into(real_rois[:30], config, buffer[:30])
    assert np.shares_memory(filled, buffer) and (buffer[30:] == 77).all()
    expected = np.stack([preprocess(image, config) for image in real_rois[:30]])
    np.testing.assert_array_equal(buffer[:30], expected)
    np.testing.assert_array_equal(preprocess_batch(real_rois[:30], config), expected)
    with pytest.raises(ValueError, match=r"uint8 of shape \(30, 64, 64, 1\)"):
        preprocess_into(real_rois[:30], config, np.empty((30, 64, 64, 1), np.float32))
    with pytest.raises(ValueError, match="C-contiguous"):
        preprocess_into(real_rois[:2], config, np.empty((64, 64, 2, 1), np.uint8).transpose(2, 0, 1, 3))
    assert preprocess_batch([], config).shape == (0, 64, 64, 1)


def test_bad_inputs_and_config_round_trip() -> None:
    config = PreprocessConfig(size=48, pad_value=3, normalisation="none")
    assert config.to_dict() == {"size": 48, "pad_value": 3, "normalisation": "none", "method": "opencv"}
    assert PreprocessConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ValueError, match="unknown preprocessing parameters"):
        PreprocessConfig.from_dict({**config.to_dict(), "gamma": 2})
    with pytest.raises(ValueError, match="lack the method"):
        PreprocessConfig.from_dict({"size": 48, "pad_value": 3, "normalisation": "none"})
    with pytest.raises(ValueError, match="method must be one of"):
        PreprocessConfig(method="skimage")
    with pytest.raises(ValueError, match="normalisation"):
        PreprocessConfig(normalisation="zscore")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="2-D uint8"):
        preprocess(np.zeros((4, 4, 3), np.uint8), config)
    with pytest.raises(ValueError, match="2-D uint8"):
        preprocess(np.zeros((4, 4), np.float32), config)
    with pytest.raises(ValueError, match="non-empty"):
        preprocess(np.zeros((0, 4), np.uint8), config)


def test_training_and_inference_see_identical_inputs_on_real_rois(utopia_data: Path, tmp_path: Path) -> None:
    """The training pipeline (a prepared set, streamed, no augmentation) and `predict` feed the model the same
    uint8 tensors."""
    from model.training.data import image_folder_source
    from model.training.prepared import prepare

    data = load_image_folder(str(utopia_data / "labelled"))
    config = PreprocessConfig(size=64)
    prepared = prepare(image_folder_source(str(utopia_data / "labelled")), str(tmp_path / "p"), config, shard_rois=32)
    rows = np.flatnonzero(prepared.labels() >= 0)
    training = np.concatenate(
        [batch[0].numpy() for batch in make_dataset(prepared, rows, 16, training=False, seed=0)]
    )
    # inference: a model that returns its (cast) input flattened, so `predict`'s output is what the model saw
    inputs, cast = uint8_image_input((64, 64, 1))
    echo = keras.Model(inputs, keras.layers.Flatten()(cast))
    echo_bundle = Bundle(model=echo, classes=[str(i) for i in range(64 * 64)], preprocess=config, arch="echo")
    seen = predict(echo_bundle, data.images, batch_size=10)
    assert training.shape == (93, 64, 64, 1) and training.dtype == np.uint8
    np.testing.assert_array_equal(seen, training.reshape(93, -1).astype(np.float32))
    np.testing.assert_array_equal(training, preprocess_batch(data.images, config))
    assert training.max() == 255 and training.min() == 0


def test_the_contract_as_data_round_trips_and_refuses_what_cannot_be() -> None:
    from model.preprocess import PRESETS, model_input, preset

    smhi = preset("smhi", size=64, mean=(0.7,), std=(0.08,))
    data = smhi.to_dict()
    assert data["mean"] == [0.7] and "channels" in data and "interpolation" not in data  # defaults left out
    assert PreprocessConfig.from_dict(data) == smhi
    legacy = {"size": 64, "pad_value": 0, "normalisation": "minmax", "method": "opencv"}  # a bundle of before
    assert PreprocessConfig.from_dict(legacy) == replace(PRESETS["utopia"], size=64)  # means the ifcbUTOPIA contract
    pixels = np.full((2, 64, 64, 1), 255, np.float32)
    assert model_input(pixels, smhi).shape == (2, 3, 64, 64)
    np.testing.assert_allclose(model_input(pixels, smhi), (1 - 0.7) / 0.08, rtol=1e-6)
    uint8 = np.zeros((1, 128, 128, 1), np.uint8)
    assert model_input(uint8, PreprocessConfig()) is uint8  # the default passes its uint8 batch through
    for bad, message in (
        ({"precision": "float32"}, "minmax normalisation stretches uint8"),
        ({"channels": 2}, "channels must be 1 or 3"),
        ({"mean": (0.5,)}, "mean and std go together"),
        ({"mean": (0.5,), "std": (0.0,)}, "std must be positive"),
        ({"channels": 3, "mean": (1, 2), "std": (1, 2)}, "needs 1 or 3 values"),
        ({"resize": "crop"}, "resize must be one of"),
    ):
        with pytest.raises(ValueError, match=message):
            PreprocessConfig(**bad)
    with pytest.raises(ValueError, match="unknown preprocessing preset 'keras'"):
        preset("keras")
