"""ONNX models as their writers stamp them (IR version, opset) against the installed ONNX Runtime: the runtime's
limits are what it loads; a graph saved by the installed onnx (a newer IR version than the runtime reads) is lowered
and classifies; tf2onnx's and `torch.onnx.export`'s stamps import unchanged; an opset beyond the runtime's, or a
graph using what a newer IR version added, is refused saying what is supported and how to convert."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnx_support import features_of, onnx_classifier, run_directly
from typer.testing import CliRunner

from model.bundle import BundleError
from model.convert.from_onnx import import_onnx
from model.formats.onnx_compat import IR_ADDITIONS, default_opset, newer_features, runtime_limits
from model.inference.load import load_bundle
from model.inference.predictors import predict
from model.preprocess import model_input, preprocess_batch, preset
from pipeline.cli.app import app
from pipeline.ifcb.archive import list_bins
from pipeline.ifcb.bins import read_bin_images, read_bin_meta
from pipeline.ifcb.synth import write_synthetic_archive
from pipeline.results.rois import open_rois

CLASSES = "round,long,spiky"
#: What `torch.onnx.export` (the dynamo exporter, the default since PyTorch 2.9) writes: the IR version of
#: `ONNX_IR_VERSION` in pytorch torch/onnx/_internal/exporter/_constants.py (10), the opset of `TORCHLIB_OPSET` there
#: (18, 22 in later versions) or the default `opset_version` (20, pytorch/pytorch#158802), and the weights as external
#: data beside the graph (`external_data=True` in torch/onnx/_internal/exporter/_compat.py `export_compat`).
TORCH_IR_VERSION, TORCH_OPSETS = 10, (18, 20, 22)


def _cli(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, " ".join(result.output.split())


def _images(n: int = 9, seed: int = 4) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, tuple(rng.integers(5, 60, 2)), dtype=np.uint8) for _ in range(n)]


def _stamps(path: Path) -> tuple[int, int | None]:
    proto = onnx.load(str(path), load_external_data=False)
    return proto.ir_version, default_opset(proto)


def _softmax_scores(inputs: np.ndarray, weights: dict[str, np.ndarray]) -> np.ndarray:
    """`onnx_classifier`'s scores computed in numpy from its weights, independently of any runtime."""
    logits = features_of(inputs, weights) @ weights["w2"].T.astype(np.float64) + weights["b2"]
    exp = np.exp(logits - logits.max(axis=1, keepdims=True))
    return exp / exp.sum(axis=1, keepdims=True)


def test_the_limits_are_what_the_runtime_loads(tmp_path: Path) -> None:
    limits = runtime_limits()
    zeros = np.zeros((1, 3, 8, 8), np.float32)
    onnx_classifier(tmp_path / "top.onnx", size=8, ir_version=limits.ir_version, opset=limits.opset)
    assert run_directly(tmp_path / "top.onnx", zeros).shape == (1, 3)
    if limits.ir_version < onnx.IR_VERSION:
        onnx_classifier(tmp_path / "ir.onnx", size=8, ir_version=limits.ir_version + 1, opset=limits.opset)
        with pytest.raises(Exception, match=f"max supported IR version: {limits.ir_version}"):
            run_directly(tmp_path / "ir.onnx", zeros)
    if limits.opset < onnx.defs.onnx_opset_version():
        onnx_classifier(tmp_path / "opset.onnx", size=8, ir_version=limits.ir_version, opset=limits.opset + 1)
        with pytest.raises(Exception, match=f"ai.onnx is till opset {limits.opset}"):
            run_directly(tmp_path / "opset.onnx", zeros)


@pytest.mark.slow
def test_a_model_saved_with_the_installed_onnx_imports_and_classifies(tmp_path: Path, dask_client) -> None:
    model, bundle_url, archive, store = (tmp_path / name for name in ("m.onnx", "b.zip", "archive", "s.zarr"))
    weights = onnx_classifier(model, size=32, ir_version=None, opset=17)  # what `helper.make_model` stamps
    assert _stamps(model) == (onnx.IR_VERSION, 17)
    code, output = _cli("model", "import", str(model), "--classes", CLASSES, "--preprocess", "whoi", "--out",
                        str(bundle_url))  # fmt: skip
    assert code == 0, output
    bundle = load_bundle(str(bundle_url))
    stored = min(onnx.IR_VERSION, runtime_limits().ir_version)
    assert bundle.model.proto().ir_version == stored
    lowered = bundle.provenance["imported_from"]["ir_version_lowered"]
    assert lowered == (None if stored == onnx.IR_VERSION else {"from": onnx.IR_VERSION, "to": stored})

    write_synthetic_archive(str(archive), bins=3, rois=8, classes=3, seed=7)
    code, output = _cli("classify", str(archive), "--model", str(bundle_url), "--out", str(store), "--cluster",
                        dask_client.scheduler.address, "--json")  # fmt: skip
    assert code == 0, output
    assert json.loads(output)["bins_done"] == 3
    rois = open_rois(str(store))
    fs, bins, _ = list_bins(str(archive))
    for files in bins:
        images = [image for _, image in read_bin_images(fs, read_bin_meta(fs, files))]
        inputs = model_input(preprocess_batch(images, bundle.preprocess), bundle.preprocess)
        mine = rois.isel(roi=(rois.bin == files.bin.id).values)
        np.testing.assert_allclose(mine.scores.values, _softmax_scores(inputs, weights), rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_a_keras_model_converted_by_tf2onnx_imports_unchanged(tmp_path: Path) -> None:
    from model import architectures

    keras_model = architectures.build("small-cnn", 3, 32)
    pixels = preprocess_batch(_images(), preset("utopia", size=32))
    expected = keras_model.predict_on_batch(pixels)  # also builds it, as the exporter needs
    keras_model.export(str(tmp_path / "k.onnx"), format="onnx", verbose=False)  # Keras' exporter: tf2onnx
    proto = onnx.load(str(tmp_path / "k.onnx"))
    assert proto.producer_name == "tf2onnx"
    stamps = _stamps(tmp_path / "k.onnx")
    assert stamps == (8, 15)  # tf2onnx's preferred opset 15, and its OPSET_TO_IR_VERSION for it
    code, output = _cli("model", "import", str(tmp_path / "k.onnx"), "--classes", CLASSES, "--preprocess",
                        "utopia", "--out", str(tmp_path / "b.zip"))  # fmt: skip
    assert code == 0, output
    bundle = load_bundle(str(tmp_path / "b.zip"))
    assert (bundle.model.proto().ir_version, default_opset(bundle.model.proto())) == stamps
    assert bundle.provenance["imported_from"]["ir_version_lowered"] is None
    scores = predict(bundle, _images())
    np.testing.assert_array_equal(scores, run_directly(tmp_path / "k.onnx", pixels))
    np.testing.assert_allclose(scores, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("opset", TORCH_OPSETS)
def test_the_stamps_of_torch_onnx_export_import_unchanged(tmp_path: Path, opset: int) -> None:
    model = tmp_path / "m.onnx"
    onnx_classifier(model, size=24, ir_version=TORCH_IR_VERSION, opset=opset, external=True)
    proto = onnx.load(str(model), load_external_data=False)
    proto.graph.metadata_props.add(key="pkg.torch.export.ExportedProgram.graph_signature", value="...")  # as torch
    onnx.save(proto, str(model))
    assert (tmp_path / "m.onnx.data").exists()
    code, output = _cli("model", "import", str(model), "--classes", CLASSES, "--preprocess", "smhi", "--out",
                        str(tmp_path / "b.zip"))  # fmt: skip
    assert code == 0, output
    stored = load_bundle(str(tmp_path / "b.zip"))
    assert (stored.model.proto().ir_version, default_opset(stored.model.proto())) == (TORCH_IR_VERSION, opset)
    images = _images()
    inputs = model_input(preprocess_batch(images, stored.preprocess), stored.preprocess)
    np.testing.assert_array_equal(predict(stored, images), run_directly(model, inputs))
    # graph metadata came with IR 10: such a graph could not be lowered below it
    assert newer_features(stored.model.proto(), 9) == ["GraphProto.metadata_props (IR 10)"]


def test_an_opset_beyond_the_runtime_is_refused_and_the_conversion_named_works(tmp_path: Path) -> None:
    limits = runtime_limits()
    if limits.opset >= onnx.defs.onnx_opset_version():
        pytest.skip(f"ONNX Runtime {limits.version} runs every opset the installed onnx knows ({limits.opset})")
    model, bundle_url = tmp_path / "m.onnx", tmp_path / "b.zip"
    weights = onnx_classifier(model, size=16, ir_version=None, opset=limits.opset + 1)
    code, output = _cli("model", "import", str(model), "--classes", CLASSES, "--preprocess", "whoi", "--out",
                        str(bundle_url))  # fmt: skip
    assert code == 2 and not bundle_url.exists()
    assert f"imports opset {limits.opset + 1} of the ONNX operators" in output
    assert f"runs models up to IR version {limits.ir_version} and opset {limits.opset}" in output
    assert f"onnx.version_converter.convert_version(model, {limits.opset})" in output
    assert "opset_version=N" in output and "--opset N" in output

    converted = onnx.version_converter.convert_version(onnx.load(str(model)), limits.opset)  # as the message says
    onnx.save(converted, str(tmp_path / "converted.onnx"))
    code, output = _cli("model", "import", str(tmp_path / "converted.onnx"), "--classes", CLASSES, "--preprocess",
                        "whoi", "--out", str(bundle_url))  # fmt: skip
    assert code == 0, output
    bundle = load_bundle(str(bundle_url))
    assert (bundle.model.proto().ir_version, default_opset(bundle.model.proto())) == (limits.ir_version, limits.opset)
    images = _images()
    inputs = model_input(preprocess_batch(images, bundle.preprocess), bundle.preprocess)
    np.testing.assert_allclose(predict(bundle, images), _softmax_scores(inputs, weights), rtol=1e-5, atol=1e-6)


def test_a_graph_using_what_a_newer_ir_added_is_refused(tmp_path: Path) -> None:
    limits = runtime_limits()
    if limits.ir_version >= onnx.IR_VERSION:
        pytest.skip(f"ONNX Runtime {limits.version} reads every IR version the installed onnx writes")
    model = tmp_path / "m.onnx"
    onnx_classifier(model, size=16, ir_version=None)
    proto = onnx.load(str(model))
    added = min(IR_ADDITIONS[onnx.IR_VERSION].types)  # a tensor type the newest IR version added
    proto.graph.initializer.append(helper.make_tensor("unused", added, [1], vals=b"\0", raw=True))
    onnx.save(proto, str(model))
    newest, name = onnx.IR_VERSION, TensorProto.DataType.Name(added)
    with pytest.raises(BundleError, match=rf"has IR version {newest} and uses {name} tensors \(IR {newest}\)"):
        import_onnx(str(model), CLASSES.split(","), preprocess_config=preset("whoi"))


def test_a_model_the_runtime_cannot_run_is_refused_at_import(tmp_path: Path) -> None:
    model = tmp_path / "m.onnx"
    onnx_classifier(model, size=16, n_classes=4)
    proto = onnx.load(str(model))
    proto.graph.output[0].type.tensor_type.shape.dim[1].dim_value = 3  # says 3 classes, computes 4
    onnx.save(proto, str(model))
    code, output = _cli("model", "import", str(model), "--classes", CLASSES, "--preprocess", "whoi", "--out",
                        str(tmp_path / "b.zip"))  # fmt: skip
    assert code == 2 and not (tmp_path / "b.zip").exists()
    assert "the model gave scores of shape (1, 4) for 1 input(s) of shape (3, 16, 16); expected (1, 3)" in output

    proto.graph.initializer.append(numpy_helper.from_array(np.array([-1, 7], np.int64), "odd"))
    proto.graph.node.insert(0, helper.make_node("Reshape", ["images", "odd"], ["odd_rows"]))  # 768 values, not 7s
    proto.graph.output.append(helper.make_tensor_value_info("odd_rows", TensorProto.FLOAT, ["r", 7]))
    proto.graph.output[0].type.tensor_type.shape.dim[1].dim_value = 4
    onnx.save(proto, str(model))
    with pytest.raises(BundleError, match=r"ONNX Runtime cannot run the model: .*Reshape"):
        import_onnx(str(model), ["a", "b", "c", "d"], preprocess_config=preset("whoi"))
