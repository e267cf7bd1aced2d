"""Model bundles: round trips (local and through a real S3 server), cheap info, and clear refusals."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest

from model import architectures
from model.bundle import Bundle, BundleError, load_bundle, read_bundle_info, save_bundle
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
    expected = bundle.predict(images)
    got = loaded.predict(images, batch_size=4)  # batches of 4, 4, 3
    assert got.shape == (11, 3) and got.dtype == np.float32
    np.testing.assert_allclose(got, expected, atol=1e-6)
    np.testing.assert_allclose(got.sum(axis=1), 1.0, atol=1e-5)
    assert loaded.predict([]).shape == (0, 3)


def test_s3_round_trip_and_cheap_info(bundle: Bundle, images, s3_server) -> None:
    url = f"s3://{s3_server.new_bucket()}/models/m.ifcbmodel"
    digest = save_bundle(bundle, url, s3_server.storage_options)
    info = read_bundle_info(url, s3_server.storage_options)
    assert info["content_hash"] == digest and info["classes"] == CLASSES and info["arch"] == "small-cnn"
    assert info["preprocess"] == {"size": 24, "pad_value": 5, "normalisation": "minmax"}
    loaded = load_bundle(url, s3_server.storage_options)
    np.testing.assert_allclose(loaded.predict(images), bundle.predict(images), atol=1e-6)
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
    with pytest.raises(BundleError, match="3 outputs but 2 classes"):
        save_bundle(wrong, str(tmp_path / "x.ifcbmodel"))
    twice = Bundle(model=bundle.model, classes=["a", "a", "b"], preprocess=bundle.preprocess, arch="small-cnn")
    with pytest.raises(BundleError, match="unique"):
        save_bundle(twice, str(tmp_path / "x.ifcbmodel"))


def test_code_inside_a_bundle_is_not_run(tmp_path: Path) -> None:
    """The hash is no signature (anyone can recompute it), so loading must never execute code from the file."""
    import keras

    inputs = keras.Input((8, 8, 1))
    outputs = keras.layers.Lambda(lambda x: keras.ops.ones((keras.ops.shape(x)[0], 2)))(inputs)
    crafted = Bundle(model=keras.Model(inputs, outputs), classes=["a", "b"], preprocess=PreprocessConfig(size=8),
                     arch="crafted")  # fmt: skip
    save_bundle(crafted, str(tmp_path / "crafted.ifcbmodel"))
    with pytest.raises(BundleError, match=r"cannot be loaded: .*(unsafe|safe_mode)"):
        load_bundle(str(tmp_path / "crafted.ifcbmodel"))
