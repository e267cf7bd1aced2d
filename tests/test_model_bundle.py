"""Model bundles: round trips (local and through a real S3 server), cheap info, and clear refusals."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest

from model import architectures
from model.bundle import Bundle, BundleError, read_bundle_info, save_bundle
from model.inference.load import load_bundle
from model.inference.predictors import predict
from model.preprocess import PreprocessConfig

CLASSES = ["round", "needle", "star"]


@pytest.fixture(scope="module")
def bundle() -> Bundle:
    model = architectures.build("small-cnn", len(CLASSES), 24)
    config = PreprocessConfig(size=24, pad_value=5)
    provenance = {"data": {"source": "unit test"}, "score": np.float32(0.5), "nan": float("nan")}
    return Bundle(model=model, classes=CLASSES, preprocess=config, arch="small-cnn", provenance=provenance)


@pytest.fixture(scope="module")
def images() -> list[np.ndarray]:
    rng = np.random.default_rng(3)
    return [rng.integers(0, 256, size=(rng.integers(5, 60), rng.integers(5, 60)), dtype=np.uint8) for _ in range(11)]


def _rezip(source: Path, target: Path, edit) -> None:
    """Copy a bundle, letting `edit(name, bytes) -> bytes` change its members (as a tamperer would)."""
    with zipfile.ZipFile(source) as src, zipfile.ZipFile(target, "w") as dst:
        for name in src.namelist():
            dst.writestr(name, edit(name, src.read(name)))


def test_local_round_trip_predicts_the_same(bundle: Bundle, images, tmp_path: Path) -> None:
    path = tmp_path / "m.ifcbmodel"
    digest = save_bundle(bundle, str(path))
    assert digest == bundle.content_hash and len(digest) == 64
    loaded = load_bundle(str(path))
    assert (loaded.classes, loaded.arch, loaded.preprocess, loaded.content_hash) == (
        CLASSES, "small-cnn", PreprocessConfig(size=24, pad_value=5), digest,
    )  # fmt: skip
    assert loaded.provenance == {"data": {"source": "unit test"}, "score": 0.5, "nan": None}
    expected = predict(bundle, images)
    got = predict(loaded, images, batch_size=4)  # batches of 4, 4, 3
    assert got.shape == (11, 3) and got.dtype == np.float32
    np.testing.assert_allclose(got, expected, atol=1e-6)
    np.testing.assert_allclose(got.sum(axis=1), 1.0, atol=1e-5)
    assert predict(loaded, []).shape == (0, 3)


def test_s3_round_trip_and_cheap_info(bundle: Bundle, images, s3_server) -> None:
    url = f"s3://{s3_server.new_bucket()}/models/m.ifcbmodel"
    digest = save_bundle(bundle, url, s3_server.storage_options)
    info = read_bundle_info(url, s3_server.storage_options)
    assert info["content_hash"] == digest and info["classes"] == CLASSES and info["arch"] == "small-cnn"
    assert info["preprocess"] == {"size": 24, "pad_value": 5, "normalisation": "minmax", "method": "opencv"}
    loaded = load_bundle(url, s3_server.storage_options)
    np.testing.assert_allclose(predict(loaded, images), predict(bundle, images), atol=1e-6)
    with pytest.raises(BundleError, match=r"no model bundle at s3://.*/absent"):
        load_bundle(url.replace("m.ifcbmodel", "absent"), s3_server.storage_options)


def test_tampered_metadata_is_refused(bundle: Bundle, tmp_path: Path) -> None:
    good = tmp_path / "good.ifcbmodel"
    save_bundle(bundle, str(good))

    def swap_classes(name: str, data: bytes) -> bytes:
        if name != "bundle.json":
            return data
        metadata = json.loads(data)
        metadata["classes"] = list(reversed(metadata["classes"]))
        return json.dumps(metadata).encode()

    _rezip(good, tmp_path / "swapped.ifcbmodel", swap_classes)
    with pytest.raises(BundleError, match=r"content hash mismatch .* modified after it was written"):
        load_bundle(str(tmp_path / "swapped.ifcbmodel"))


def test_tampered_weights_are_refused(bundle: Bundle, tmp_path: Path) -> None:
    good = tmp_path / "good.ifcbmodel"
    save_bundle(bundle, str(good))

    def nudge_a_weight(name: str, data: bytes) -> bytes:
        if name != "model.keras":
            return data
        out = io.BytesIO()
        with zipfile.ZipFile(io.BytesIO(data)) as src, zipfile.ZipFile(out, "w") as dst:
            for member in src.namelist():
                content = bytearray(src.read(member))
                if member.endswith(".h5"):
                    content[-100] ^= 1
                dst.writestr(member, bytes(content))
        return out.getvalue()

    _rezip(good, tmp_path / "nudged.ifcbmodel", nudge_a_weight)
    with pytest.raises(BundleError, match="content hash mismatch"):
        load_bundle(str(tmp_path / "nudged.ifcbmodel"))


def test_wrong_and_incomplete_files_are_refused(bundle: Bundle, tmp_path: Path) -> None:
    (tmp_path / "weights.h5").write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(100))
    with pytest.raises(BundleError, match="not an ifcbflow model bundle \\(not a zip file\\)"):
        load_bundle(str(tmp_path / "weights.h5"))
    with zipfile.ZipFile(tmp_path / "other.zip", "w") as archive:
        archive.writestr("readme.txt", "hello")
    with pytest.raises(BundleError, match=r"missing bundle\.json, model\.keras"):
        read_bundle_info(str(tmp_path / "other.zip"))
    good = tmp_path / "good.ifcbmodel"
    save_bundle(bundle, str(good))

    def drop_hash(name: str, data: bytes) -> bytes:
        if name != "bundle.json":
            return data
        return json.dumps({k: v for k, v in json.loads(data).items() if k != "content_hash"}).encode()

    _rezip(good, tmp_path / "nohash.ifcbmodel", drop_hash)
    with pytest.raises(BundleError, match=r"lacks required keys \['content_hash'\]"):
        load_bundle(str(tmp_path / "nohash.ifcbmodel"))
    with pytest.raises(BundleError, match="no model bundle at"):
        read_bundle_info(str(tmp_path / "absent.ifcbmodel"))


def test_save_checks_classes_against_the_model(bundle: Bundle, tmp_path: Path) -> None:
    wrong = Bundle(model=bundle.model, classes=["a", "b"], preprocess=bundle.preprocess, arch="small-cnn")
    with pytest.raises(BundleError, match="3 outputs but 2 class names"):
        save_bundle(wrong, str(tmp_path / "x.ifcbmodel"))
    twice = Bundle(model=bundle.model, classes=["a", "a", "b"], preprocess=bundle.preprocess, arch="small-cnn")
    with pytest.raises(BundleError, match="unique"):
        save_bundle(twice, str(tmp_path / "x.ifcbmodel"))


def test_code_inside_a_bundle_is_not_run(tmp_path: Path) -> None:
    """The hash is no signature (anyone can recompute it), so loading must never execute code from the file."""
    import keras

    inputs = keras.Input((8, 8, 1), dtype="uint8")
    outputs = keras.layers.Lambda(lambda x: keras.ops.ones((keras.ops.shape(x)[0], 2)))(inputs)
    crafted = Bundle(model=keras.Model(inputs, outputs), classes=["a", "b"], preprocess=PreprocessConfig(size=8),
                     arch="crafted")  # fmt: skip
    save_bundle(crafted, str(tmp_path / "crafted.ifcbmodel"))
    with pytest.raises(BundleError, match=r"layer 'lambda\w*' is a Lambda layer, Python code the file would run"):
        load_bundle(str(tmp_path / "crafted.ifcbmodel"))


def _previous_format_bundle(path: Path) -> None:
    """A bundle as format version 1 wrote it: Pillow-era preprocessing dict, float32 model input, valid hash."""
    import keras

    from model.bundle import content_hash

    inputs = keras.Input((24, 24, 1), name="image")
    outputs = keras.layers.Dense(3, activation="softmax")(keras.layers.Flatten()(inputs))
    model_path = path.with_suffix(".keras")
    keras.Model(inputs, outputs).save(model_path)
    model_bytes = model_path.read_bytes()
    metadata = {
        "format": "ifcbflow-bundle", "format_version": 1, "classes": CLASSES, "arch": "small-cnn",
        "preprocess": {"size": 24, "pad_value": 0, "normalisation": "minmax"}, "provenance": {},
    }  # fmt: skip
    metadata["content_hash"] = content_hash(model_bytes, metadata)
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("bundle.json", json.dumps(metadata))
        archive.writestr("model.keras", model_bytes)


def test_a_previous_format_bundle_is_refused_with_what_to_do(tmp_path: Path) -> None:
    old = tmp_path / "old.ifcbmodel"
    _previous_format_bundle(old)
    for read in (read_bundle_info, load_bundle):
        with pytest.raises(BundleError) as caught:
            read(str(old))
        message = str(caught.value)
        assert "format version 1" in message and "Pillow" in message and "float32" in message, message
        assert "ifcbflow model import ARCH.json WEIGHTS.h5" in message and "retrain" in message, message


def test_input_size_mismatch_is_refused_at_save_and_load(bundle: Bundle, tmp_path: Path) -> None:
    wrong = Bundle(model=bundle.model, classes=CLASSES, preprocess=PreprocessConfig(size=32), arch="small-cnn")
    with pytest.raises(BundleError, match=r"input shape \(24, 24, 1\) does not match the preprocessing size 32"):
        save_bundle(wrong, str(tmp_path / "x.ifcbmodel"))
    good = tmp_path / "good.ifcbmodel"
    save_bundle(bundle, str(good))

    def resize_preprocessing(name: str, data: bytes) -> bytes:
        """Another writer's bundle whose metadata disagrees with its model, with a hash that is still valid."""
        from model.bundle import content_hash

        if name != "bundle.json":
            return data
        with zipfile.ZipFile(good) as archive:
            model_bytes = archive.read("model.keras")
        metadata = json.loads(data)
        metadata["preprocess"]["size"] = 32
        metadata["content_hash"] = content_hash(model_bytes, metadata)
        return json.dumps(metadata).encode()

    _rezip(good, tmp_path / "mismatch.ifcbmodel", resize_preprocessing)
    with pytest.raises(BundleError, match=r"mismatch\.ifcbmodel: .*\(24, 24, 1\) does not match .* size 32"):
        load_bundle(str(tmp_path / "mismatch.ifcbmodel"))


def test_a_float_input_model_is_refused_at_save(tmp_path: Path) -> None:
    import keras

    inputs = keras.Input((24, 24, 1))
    outputs = keras.layers.Dense(3, activation="softmax")(keras.layers.Flatten()(inputs))
    floats = Bundle(model=keras.Model(inputs, outputs), classes=CLASSES, preprocess=PreprocessConfig(size=24),
                    arch="floats")  # fmt: skip
    with pytest.raises(BundleError, match=r"takes float32 input but bundles feed it uint8.*ifcbflow model import"):
        save_bundle(floats, str(tmp_path / "x.ifcbmodel"))


def test_thresholds_are_metadata_under_the_hash(bundle: Bundle, tmp_path: Path) -> None:
    plain = tmp_path / "plain.zip"
    save_bundle(bundle, str(plain))
    assert "thresholds" not in read_bundle_info(str(plain)) and load_bundle(str(plain)).thresholds is None
    thresholded = Bundle(bundle.model, CLASSES, bundle.preprocess, bundle.arch, thresholds={"needle": 0.7})
    save_bundle(thresholded, str(tmp_path / "t.zip"))
    loaded = load_bundle(str(tmp_path / "t.zip"))
    assert loaded.thresholds == {"round": 0.0, "needle": 0.7, "star": 0.0}  # every class, in class order
    assert loaded.content_hash != load_bundle(str(plain)).content_hash
    _rezip(tmp_path / "t.zip", tmp_path / "edited.zip",
           lambda name, data: data.replace(b"0.7", b"0.2") if name == "bundle.json" else data)  # fmt: skip
    with pytest.raises(BundleError, match="content hash mismatch"):
        load_bundle(str(tmp_path / "edited.zip"))
    for wrong, message in (({"nedle": 0.5}, "not classes"), ({"needle": 1.5}, r"\[0, 1\]")):
        with pytest.raises(BundleError, match=message):
            save_bundle(Bundle(bundle.model, CLASSES, bundle.preprocess, bundle.arch, thresholds=wrong),
                        str(tmp_path / "x.zip"))  # fmt: skip
