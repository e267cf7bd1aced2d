"""THE preprocessing function: geometry, normalisation, config round trip, and training == inference on real ROIs."""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pytest

from model.bundle import Bundle
from model.data import load_image_folder
from model.preprocess import PreprocessConfig, preprocess, preprocess_batch
from model.train import make_dataset


def test_long_side_becomes_size_and_content_is_centred() -> None:
    image = np.full((20, 80), 200, dtype=np.uint8)  # wide: 80 -> 32, 20 -> 8
    out = preprocess(image, PreprocessConfig(size=32, normalisation="none"))
    assert out.shape == (32, 32, 1) and out.dtype == np.float32
    content_rows = np.flatnonzero(out[:, :, 0].max(axis=1) > 0)
    assert (content_rows.min(), content_rows.max()) == (12, 19)  # 8 rows, (32 - 8) // 2 above
    assert np.all(out[12:20, :, 0] == 200)


def test_tall_image_and_odd_padding_puts_the_extra_pixel_after() -> None:
    image = np.full((64, 21), 90, dtype=np.uint8)  # 21 * 0.5 = 10.5 -> 10 columns, 22 of padding: 11 + 11
    out = preprocess(image, PreprocessConfig(size=32, pad_value=7, normalisation="none"))[:, :, 0]
    columns = np.flatnonzero(out[0] != 7)
    assert (columns.min(), columns.max()) == (11, 20)
    image = np.full((64, 23), 90, dtype=np.uint8)  # 11 columns, 21 of padding: 10 before, 11 after
    out = preprocess(image, PreprocessConfig(size=32, pad_value=7, normalisation="none"))[:, :, 0]
    columns = np.flatnonzero(out[0] != 7)
    assert (columns.min(), columns.max()) == (10, 20)


def test_minmax_stretches_the_padded_canvas_to_0_255() -> None:
    rng = np.random.default_rng(0)
    image = rng.integers(100, 180, size=(40, 30), dtype=np.uint8)
    out = preprocess(image, PreprocessConfig(size=64))
    assert out.min() == 0.0 and out.max() == pytest.approx(255.0)
    assert out[0, 0, 0] == 0.0  # black padding stays the minimum (ifcbUTOPIA contract)
    square = rng.integers(100, 180, size=(64, 64), dtype=np.uint8)  # no padding: the image's own min..max
    stretched = preprocess(square, PreprocessConfig(size=64))[:, :, 0]
    expected = (square.astype(np.float32) - square.min()) * (255.0 / (square.max() - square.min()))
    np.testing.assert_allclose(stretched, expected, rtol=1e-6)


def test_flat_image_becomes_zeros_and_tiny_images_work() -> None:
    assert not preprocess(np.full((64, 64), 130, np.uint8), PreprocessConfig(size=64)).any()
    out = preprocess(np.array([[5, 250]], dtype=np.uint8), PreprocessConfig(size=16))
    assert out.shape == (16, 16, 1)


def test_bad_inputs_and_config_round_trip() -> None:
    config = PreprocessConfig(size=48, pad_value=3, normalisation="none")
    assert PreprocessConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ValueError, match="unknown preprocessing parameters"):
        PreprocessConfig.from_dict({**config.to_dict(), "gamma": 2})
    with pytest.raises(ValueError, match="normalisation"):
        PreprocessConfig(normalisation="zscore")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="2-D uint8"):
        preprocess(np.zeros((4, 4, 3), np.uint8), config)
    with pytest.raises(ValueError, match="2-D uint8"):
        preprocess(np.zeros((4, 4), np.float32), config)


def test_training_and_inference_see_identical_inputs_on_real_rois(utopia_data: Path) -> None:
    """The tf.data training pipeline (no augmentation) and Bundle.predict feed the model the same tensors."""
    data = load_image_folder(str(utopia_data / "labelled"))
    config = PreprocessConfig(size=64)
    training = np.concatenate(
        [batch[0].numpy() for batch in make_dataset(data, data.classes, config, 16, training=False, seed=0)]
    )
    # inference: a model that returns its input flattened, so Bundle.predict's output is what the model saw
    inputs = keras.Input((64, 64, 1))
    echo = keras.Model(inputs, keras.layers.Flatten()(inputs))
    seen = Bundle(model=echo, classes=[str(i) for i in range(64 * 64)], preprocess=config, arch="echo").predict(
        data.images, batch_size=10
    )
    assert training.shape == (93, 64, 64, 1)
    np.testing.assert_array_equal(seen, training.reshape(93, -1))
    np.testing.assert_array_equal(training, preprocess_batch(data.images, config))
    assert training.max() == pytest.approx(255.0) and training.min() == 0.0
