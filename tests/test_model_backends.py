"""Keras backends: a bundle predicts the same under JAX as under TensorFlow; training refuses anything but TensorFlow.

Keras picks its backend from KERAS_BACKEND when it is first imported, so the JAX side runs in a fresh process.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
from classify_support import random_weight

from model import architectures
from model.bundle import Bundle, save_bundle
from model.inference.predictors import predict
from model.preprocess import PreprocessConfig

REPO = Path(__file__).resolve().parent.parent
CLASSES = [f"c{i}" for i in range(10)]

_PREDICT_ON_JAX = """
import json, sys
import numpy as np
import keras
from model.inference.load import load_bundle
from model.inference.predictors import predict
bundle = load_bundle(sys.argv[1])
x = np.load(sys.argv[2])
rois = [np.load(sys.argv[3])[i, : 20 + 7 * i, : 90 - 5 * i] for i in range(8)]
np.save(sys.argv[4], np.asarray(bundle.model.predict_on_batch(x), dtype=np.float32))
np.save(sys.argv[5], predict(bundle, rois, batch_size=3))
print(json.dumps({"backend": keras.backend.backend(), "tensorflow_imported": "tensorflow" in sys.modules}))
"""


def _jax_env() -> dict[str, str]:
    pytest.importorskip("jax", reason="jax is in the `test` extra: `pip install -e .[cpu,test]`")
    path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "KERAS_BACKEND": "jax", "PYTHONPATH": path, "TF_CPP_MIN_LOG_LEVEL": "2"}


def _spread_weights(model: keras.Model, x: np.ndarray, seed: int) -> None:
    """Random weights, then the last layer scaled so the logits of `x` have std 2: a softmax that is neither flat
    nor saturated, so that backend differences would show in the probabilities."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        arrays = [random_weight(variable.name, tuple(variable.shape), rng) for variable in layer.weights]
        if arrays:
            layer.set_weights(arrays)
    features = np.asarray(keras.Model(model.inputs, model.layers[-2].output).predict_on_batch(x))
    kernel, bias = model.layers[-1].get_weights()
    logits = features @ kernel + bias
    model.layers[-1].set_weights([kernel * np.float32(2 / logits.std()), bias])


@pytest.mark.slow
def test_a_bundle_predicts_the_same_under_jax_and_tensorflow(tmp_path: Path) -> None:
    env = _jax_env()
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (12, 128, 128, 1), dtype=np.uint8)
    canvas = rng.integers(0, 256, (8, 80, 90), dtype=np.uint8)
    model = architectures.build("utopia-b3", len(CLASSES))
    _spread_weights(model, x, seed=2)
    bundle = Bundle(model=model, classes=CLASSES, preprocess=PreprocessConfig(), arch="utopia-b3")
    save_bundle(bundle, str(tmp_path / "u.zip"))
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "canvas.npy", canvas)
    files = [str(tmp_path / name) for name in ("u.zip", "x.npy", "canvas.npy", "jax_x.npy", "jax_rois.npy")]
    result = subprocess.run([sys.executable, "-c", _PREDICT_ON_JAX, *files], env=env, capture_output=True, text=True,
                            timeout=300)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report == {"backend": "jax", "tensorflow_imported": False}  # inference on JAX needs no TensorFlow

    on_tf = np.asarray(model.predict_on_batch(x), dtype=np.float32)
    assert on_tf.max() < 0.999 and on_tf.min() > 1e-4  # a softmax that differences would move
    np.testing.assert_allclose(np.load(tmp_path / "jax_x.npy"), on_tf, atol=1e-5)
    rois = [canvas[i, : 20 + 7 * i, : 90 - 5 * i] for i in range(8)]
    np.testing.assert_allclose(np.load(tmp_path / "jax_rois.npy"), predict(bundle, rois, batch_size=5), atol=1e-5)


def test_training_refuses_a_backend_other_than_tensorflow(tmp_path: Path) -> None:
    script = (
        "from typer.testing import CliRunner\n"
        "from model.training.train import train\n"
        "from pipeline.cli.app import app\n"
        "try:\n"
        "    train(None, epochs=1, out_url='unused')\n"
        "except RuntimeError as err:\n"
        "    print('library:', err)\n"
        "result = CliRunner().invoke(app, ['train', 'no-such-folder', '--out', 'unused.zip'])\n"
        "print('cli:', result.exit_code, result.output)\n"
    )
    result = subprocess.run([sys.executable, "-c", script], env=_jax_env(), capture_output=True, text=True,
                            timeout=120, cwd=tmp_path)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    library, cli = result.stdout.split("cli:")
    assert "training needs Keras' TensorFlow backend" in library and "selects 'jax'" in library, result.stdout
    # the CLI refuses before it looks at the data (the folder does not exist)
    assert cli.startswith(" 2 ") and "set it to tensorflow" in cli and "no folder" not in cli, result.stdout
    assert not (tmp_path / "unused.zip").exists()
