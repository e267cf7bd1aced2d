"""Shared models and bins tried as an attacker would, through the CLI: each crafted file is refused with a clear
error (exit code 2 for a model, a recorded bad bin and exit code 1 for a bin), nothing is written outside the test's
folder, and the process that read it stays within a stated peak memory.

Peak memory is `ru_maxrss` of the command's process tree, read by a fresh wrapper process that runs only that
command (`resource.getrusage(RUSAGE_CHILDREN)` counts every descendant it waited for), so earlier tests do not count.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
import zipfile
from pathlib import Path

import keras
import numpy as np
import onnx
import pytest
from classify_support import CLASSES, make_bundle
from onnx_support import onnx_classifier
from typer.testing import CliRunner

from model.bundle import BundleError, read_bundle_info
from pipeline.cli.app import app
from pipeline.ifcb.synth import write_synthetic_archive

IFCBFLOW = str(Path(sys.executable).with_name("ifcbflow"))
_MEASURE = (
    "import resource, subprocess, sys\n"
    "code = subprocess.run(sys.argv[1:]).returncode\n"
    "print('PEAK_KIB', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr)\n"
    "sys.exit(code)\n"
)


def _measured(*args: str, cwd: Path) -> tuple[int, str, float]:
    """(exit code, stdout + stderr, peak MiB of the largest process) of `ifcbflow ARGS` run in `cwd`."""
    done = subprocess.run(
        [sys.executable, "-c", _MEASURE, IFCBFLOW, *args], cwd=cwd, capture_output=True, text=True, timeout=600
    )
    lines = done.stderr.splitlines()
    peak = int(lines.pop().split()[1]) / 1024
    return done.returncode, done.stdout + "\n".join(lines), peak


def _files(root: Path) -> set[Path]:
    return {path for path in root.rglob("*") if path.is_file()}


# --- zip bombs ------------------------------------------------------------------------------------------------------


def _bomb(path: Path, inflated: int, member: str = "model.keras") -> None:
    """A bundle whose model member deflates `inflated` zero bytes to almost nothing."""
    metadata = {"format": "ifcbflow-bundle", "format_version": 2, "classes": ["a", "b"], "arch": "x",
                "preprocess": {"size": 8}, "provenance": {}, "content_hash": "0" * 64}  # fmt: skip
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as archive:
        archive.writestr("bundle.json", json.dumps(metadata))
        with archive.open(member, "w", force_zip64=True) as f:
            block = bytes(1 << 20)
            for _ in range(inflated >> 20):
                f.write(block)


def test_a_zip_bomb_bundle_is_refused_before_it_inflates(tmp_path: Path) -> None:
    bomb = tmp_path / "bomb.zip"
    _bomb(bomb, 600 << 20)
    assert bomb.stat().st_size < 1 << 20  # 600 MiB in under 1 MiB
    before = _files(tmp_path)
    code, output, peak = _measured("model", "info", str(bomb), cwd=tmp_path)
    assert code == 2 and "member 'model.keras' declares 600.0 MiB inflated from" in output, output
    assert "a zip bomb, not read" in output and "Traceback" not in output, output
    assert peak < 300, peak  # the client's own start is about 100-200 MiB; inflating would add 600
    code, output, peak = _measured("classify", str(tmp_path / "none"), "--model", str(bomb), "--out",
                                   str(tmp_path / "s.zarr"), cwd=tmp_path)  # fmt: skip
    assert code == 2 and "a zip bomb, not read" in output, output
    assert peak < 700, peak  # TensorFlow is imported; the bomb alone would be 600 MiB more
    assert _files(tmp_path) == before  # nothing written, no store


def test_a_bomb_inside_the_bundles_keras_file_and_the_total_bound(tmp_path: Path, monkeypatch) -> None:
    """The `.keras` file (itself a zip) inside a stored bundle hides the bomb; and a bundle over the total bound."""
    inner = io.BytesIO()
    with zipfile.ZipFile(inner, "w", compression=zipfile.ZIP_DEFLATED) as keras_file:
        keras_file.writestr("config.json", "{}")
        keras_file.writestr("model.weights.h5", bytes(64 << 20))
    with pytest.raises(BundleError, match=r"member 'model.weights.h5' declares 64.0 MiB inflated"):
        from model.formats.keras_safety import load_keras_model

        load_keras_model(inner.getvalue(), "shared.keras")
    make_bundle(str(tmp_path / "good.zip"))
    assert read_bundle_info(str(tmp_path / "good.zip"))["classes"] == list(CLASSES)
    monkeypatch.setenv("IFCBFLOW_MAX_MODEL_BYTES", "50000")
    bound = r"inflate to more than 50,000 bytes, the bound on a model file; not read \(set IFCBFLOW_MAX_MODEL_BYTES"
    with pytest.raises(BundleError, match=bound):
        read_bundle_info(str(tmp_path / "good.zip"))
    result = CliRunner().invoke(app, ["model", "info", str(tmp_path / "good.zip")])
    assert result.exit_code == 2 and "the bound on a model file" in result.output, result.output


# --- ONNX external data ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("where", ["absolute", "parent"])
def test_onnx_external_data_cannot_write_or_read_outside(tmp_path: Path, where: str) -> None:
    """The publisher's graph names its weights at a path outside its folder: refused before anything is fetched,
    and the user's file at that path is never written (the attack wrote the publisher's bytes there)."""
    publisher, user = tmp_path / "publisher", tmp_path / "user"
    publisher.mkdir()
    user.mkdir()
    model = publisher / "m.onnx"
    onnx_classifier(model, size=8, channels=1, external=True)
    victim = user / "victim.bin"
    victim.write_bytes(b"the user's own file")
    location = str(victim) if where == "absolute" else "../user/victim.bin"
    (publisher / Path(str(victim).lstrip("/"))).parent.mkdir(parents=True, exist_ok=True)
    (publisher / Path(str(victim).lstrip("/"))).write_bytes((publisher / "m.onnx.data").read_bytes())
    proto = onnx.load(str(model), load_external_data=False)
    for tensor in proto.graph.initializer:
        for entry in tensor.external_data:
            if entry.key == "location":
                entry.value = location
    model.write_bytes(proto.SerializeToString())
    before = {path: path.read_bytes() for path in _files(tmp_path)}
    result = CliRunner().invoke(app, ["model", "import", str(model), "--classes", CLASSES, "--preprocess", "whoi",
                                      "--out", str(user / "b.zip")])  # fmt: skip
    assert result.exit_code == 2, result.output
    assert f"names external weights at {location!r}" in result.output and "nothing was fetched" in result.output
    assert {path: path.read_bytes() for path in _files(tmp_path)} == before  # victim unchanged, no bundle


def test_onnx_external_data_through_a_link_out_and_a_bundle_naming_external_data(tmp_path: Path) -> None:
    publisher = tmp_path / "publisher"
    publisher.mkdir()
    model = publisher / "m.onnx"
    onnx_classifier(model, size=8, channels=1, external=True)
    secret = tmp_path / "secret.data"
    (publisher / "m.onnx.data").rename(secret)
    (publisher / "m.onnx.data").symlink_to(secret)
    result = CliRunner().invoke(app, ["model", "import", str(model), "--classes", CLASSES, "--preprocess", "whoi",
                                      "--out", str(tmp_path / "b.zip")])  # fmt: skip
    assert result.exit_code == 2 and "a link out of the model's folder" in result.output, result.output
    assert not (tmp_path / "b.zip").exists()
    from model.formats.onnx_model import OnnxModel

    with pytest.raises(BundleError, match=r"keeps 4 weight tensor\(s\) outside itself .*'m.onnx.data'"):
        OnnxModel.from_bytes(model.read_bytes(), "the bundle's model")  # ONNX Runtime would look in the cwd


def test_onnx_custom_operators_are_refused(tmp_path: Path) -> None:
    from onnx import helper

    model = tmp_path / "m.onnx"
    onnx_classifier(model, size=8, channels=1)
    proto = onnx.load(str(model))
    proto.graph.node.append(helper.make_node("Exfiltrate", ["probabilities"], ["leaked"], domain="com.example"))
    proto.opset_import.append(helper.make_opsetid("com.example", 1))
    model.write_bytes(proto.SerializeToString())
    result = CliRunner().invoke(app, ["model", "import", str(model), "--classes", CLASSES, "--preprocess", "whoi",
                                      "--out", str(tmp_path / "b.zip")])  # fmt: skip
    assert result.exit_code == 2 and "custom operators (com.example.Exfiltrate)" in result.output, result.output


# --- Keras models never run code ------------------------------------------------------------------------------------


def _plain_keras(path: Path) -> None:
    inputs = keras.Input((8, 8, 1), dtype="uint8")
    x = keras.layers.Flatten()(keras.layers.Rescaling(1.0, name="rescaling")(inputs))
    keras.Model(inputs, keras.layers.Dense(3, activation="softmax", name="dense")(x)).save(path)  # names: asserted


def _with_config(source: Path, target: Path, change) -> None:
    with zipfile.ZipFile(source) as archive, zipfile.ZipFile(target, "w") as out:
        for name in archive.namelist():
            data = archive.read(name)
            if name == "config.json":
                config = json.loads(data)
                change(config)
                data = json.dumps(config).encode()
            out.writestr(name, data)


def test_keras_files_that_name_code_are_refused_before_keras_builds_them(tmp_path: Path) -> None:
    """A function of another module (the shape of CVE-2025-1550) and a custom registered layer, through `model
    import`: refused naming the layer, never suggesting to turn safe mode off."""
    _plain_keras(tmp_path / "plain.keras")
    marker = tmp_path / "ran"

    def os_function(config):
        dense = next(layer for layer in config["config"]["layers"] if layer["class_name"] == "Dense")
        dense["config"]["activation"] = {"module": "os", "class_name": "function", "config": "system",
                                         "registered_name": f"touch {marker}"}  # fmt: skip

    def custom_layer(config):
        layer = next(layer for layer in config["config"]["layers"] if layer["class_name"] == "Rescaling")
        layer.update({"module": "lab.layers", "class_name": "Doubler", "registered_name": "lab>Doubler"})

    for name, change, message in [
        ("os", os_function, "layer 'dense' names the function os.system, not Keras' own"),
        ("custom", custom_layer, "is a custom object 'lab>Doubler' (module lab.layers)"),
    ]:
        _with_config(tmp_path / "plain.keras", tmp_path / f"{name}.keras", change)
        result = CliRunner().invoke(app, ["model", "import", str(tmp_path / f"{name}.keras"), "--classes", CLASSES,
                                          "--out", str(tmp_path / "b.zip")])  # fmt: skip
        assert result.exit_code == 2 and message in result.output, result.output
        assert "ifcbflow loads no code from model files" in result.output and "safe_mode" not in result.output
    assert not marker.exists() and not (tmp_path / "b.zip").exists()


def test_a_keras2_json_with_a_lambda_is_refused(tmp_path: Path) -> None:
    """Keras 2 JSON is rebuilt from a whitelist, never by `model_from_json`: a Lambda's marshalled code is data."""
    architecture = {"class_name": "Sequential", "config": {"name": "m", "layers": [
        {"class_name": "InputLayer", "config": {"batch_input_shape": [None, 8, 8, 1], "name": "in"}},
        {"class_name": "Lambda", "config": {"name": "evil", "function": ["4wAAAAAAAAAA", None, None],
                                            "function_type": "lambda"}},
    ]}}  # fmt: skip
    (tmp_path / "arch.json").write_text(json.dumps(architecture))
    (tmp_path / "w.h5").write_bytes(b"")
    result = CliRunner().invoke(app, ["model", "import", str(tmp_path / "arch.json"), str(tmp_path / "w.h5"),
                                      "--classes", CLASSES, "--out", str(tmp_path / "b.zip")])  # fmt: skip
    assert result.exit_code == 2 and "layer type 'Lambda' (layer 'evil') is not supported" in result.output


# --- bins whose .adc lies about the .roi ----------------------------------------------------------------------------


@pytest.mark.slow  # one real classify run on the embedded cluster
def test_adc_rows_sharing_roi_bytes_are_a_recorded_bad_bin(tmp_path: Path) -> None:
    """200,000 `.adc` rows all naming the one image of a bin (the attack made 3.5 GiB of model inputs and stored the
    bin as complete): the bin is recorded bad with the reason, the other bin is complete, the run exits 1, and no
    process grew by the 200,000 images (3 GiB at 128 x 128)."""
    archive = tmp_path / "archive"
    ids = write_synthetic_archive(str(archive), bins=2, rois=1, classes=len(CLASSES), seed=3, flat=True)
    bad = ids[0]
    adc = archive / f"{bad}.adc"
    row = adc.read_text().splitlines()[-1]  # the row of the bin's one image (the first is a trigger without one)
    adc.write_text("\n".join([row] * 200_000) + "\n")
    make_bundle(str(tmp_path / "bundle.zip"))
    store = tmp_path / "s.zarr"
    code, output, peak = _measured("classify", str(archive), "--model", str(tmp_path / "bundle.zip"), "--out",
                                   str(store), "--json", cwd=tmp_path)  # fmt: skip
    assert code == 1, output
    report = CliRunner().invoke(app, ["report", str(store), "--json"])
    summary = json.loads(report.stdout)
    assert summary["bins_complete"] == 1 and summary["bins_failed"] == 1, summary
    (failure,) = summary["failures"]
    assert failure["bin"] == bad and failure["stage"] == "adc", failure
    assert ".adc line 2 repeats the image bytes of line 1 in the .roi" in failure["reason"], failure
    assert "199999 overlapping pair(s)" in failure["reason"], failure
    assert peak < 1500, peak  # TensorFlow workers; 200,000 model inputs alone would be 3,125 MiB


def test_a_real_bins_adc_with_an_image_across_the_next_is_refused_naming_both(ifcb_data: Path, tmp_path: Path) -> None:
    """The real newer bin, its third image's start byte moved 10 bytes back into the second's: `ls` reports the bin
    failed at the `.adc` with both lines and their byte ranges; the real bin itself reads as before (19 ROIs)."""
    from pipeline.ifcb.archive import bin_files_at
    from pipeline.ifcb.bins import read_bin_meta
    from pipeline.ifcb.errors import IfcbFormatError

    name = "D20130526T095207_IFCB013"
    for ext in ("hdr", "adc", "roi"):
        (tmp_path / f"{name}.{ext}").write_bytes((ifcb_data / "bins" / f"{name}.{ext}").read_bytes())
    fs, files = bin_files_at(str(tmp_path / name))
    meta = read_bin_meta(fs, files)
    assert meta.n_rois == 19
    numbers = meta.adc.roi_numbers
    second, third = int(numbers[1]), int(numbers[2])
    rows = [line.split(",") for line in (tmp_path / f"{name}.adc").read_text().splitlines()]
    start = int(meta.adc.start_byte[third - 1])
    column = next(i for i, value in enumerate(rows[third - 1]) if value.strip() == str(start))
    rows[third - 1][column] = str(start - 10)
    (tmp_path / f"{name}.adc").write_text("\n".join(",".join(row) for row in rows) + "\n")
    with pytest.raises(IfcbFormatError, match=rf"\.adc line {third} overlaps the image of line {second} in the \.roi"):
        read_bin_meta(*bin_files_at(str(tmp_path / name)))
    result = CliRunner().invoke(app, ["ls", str(tmp_path)])
    assert f"overlaps the image of line {second}" in result.output, result.output


# --- names from data never become paths outside ---------------------------------------------------------------------


def test_names_from_data_never_steer_a_path_out_of_the_store_or_export(tmp_path: Path) -> None:
    """A bin id that is a path cannot name a partition (it would have been written beside the store), a commit
    record that names a path as its partition is refused before any read, write or delete, and the Dashboard export
    makes paths only of real bin ids."""
    from pipeline.ifcb.errors import IfcbFormatError
    from pipeline.results.export import dashboard_path
    from pipeline.results.partitions import partition_id
    from pipeline.results.store import StoreMismatchError, part_key

    with pytest.raises(ValueError, match=r"'\.\./\.\./evil/D20240101T000000_IFCB999' is not a bin id"):
        partition_id(["../../evil/D20240101T000000_IFCB999"], "run")
    for altered in ("../../evil", "/etc", ".hidden", "a/b", ""):
        with pytest.raises(StoreMismatchError, match="which is not a partition id: it was altered"):
            part_key(altered)
    assert part_key(partition_id(["IFCB5_2012_028_081515"], "run")).startswith("parts/IFCB5_2012_028_081515-")
    for altered in ("../../D20240101T000000_IFCB999", "D20240101T000000_IFCB999/../../x"):
        with pytest.raises(IfcbFormatError):
            dashboard_path(altered)
    assert dashboard_path("D20240101T000000_IFCB999") == "D2024/D20240101/D20240101T000000_IFCB999_class.h5"


def test_a_store_whose_commit_names_a_path_is_refused_by_export_and_compact(tmp_path: Path) -> None:
    """Through the CLI: a shared store's commit record altered to name `../../victim` as its partition (and as one it
    replaces). `export` and `compact` stop with exit code 2 and the message; the folder outside is untouched."""
    from datetime import UTC, datetime

    from pipeline.results.partitions import partition_id
    from pipeline.results.records import BinResult
    from pipeline.results.store import ResultStore

    store = ResultStore(str(tmp_path / "shared" / "out.zarr"))
    store.prepare(bundle_info={"classes": ["a", "b"], "content_hash": "h"}, bundle_url="b", archive_url="a")
    result = BinResult("D20240101T000000_IFCB999", datetime(2024, 1, 1, tzinfo=UTC), np.array([1]),
                       np.array([[0.1, 0.9]], "f4"), None)  # fmt: skip
    part = partition_id([result.bin], "run")
    store.commit_partition(part, [result], ["a", "b"])
    other = BinResult("D20240101T010000_IFCB999", datetime(2024, 1, 1, 1, tzinfo=UTC), np.array([1]),
                      np.array([[0.8, 0.2]], "f4"), None)  # fmt: skip
    store.commit_partition(partition_id([other.bin], "run"), [other], ["a", "b"])  # two small ones: compact merges
    victim = tmp_path / "victim"
    (victim / "scores").mkdir(parents=True)
    (victim / "zarr.json").write_text('{"zarr_format": 3, "node_type": "group", "attributes": {}}')
    record = tmp_path / "shared" / "out.zarr" / "commits" / part / "zarr.json"
    document = json.loads(record.read_text())
    document["attributes"]["part"] = "../../victim"
    document["attributes"]["replaces"] = ["../../victim"]
    for entry in document["attributes"]["bins"]:
        entry["part"] = "../../victim"
    record.write_text(json.dumps(document))
    before = {path: path.read_bytes() for path in _files(victim)}
    for args in (["export", str(store.url), "--dashboard", str(tmp_path / "dash")], ["compact", str(store.url)]):
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 2, (args, result.output)
        assert "names a partition '../../victim', which is not a partition id" in result.output, result.output
        assert {path: path.read_bytes() for path in _files(victim)} == before and (victim / "scores").is_dir()
    assert not (tmp_path / "dash").exists() or not _files(tmp_path / "dash")


def test_a_zip_archive_of_bins_with_a_bomb_is_refused_before_any_bin_is_read(ifcb_data: Path, tmp_path: Path) -> None:
    """A `zip://` archive: the real newer bin, then the same bin with a `.roi` member that inflates 64 MiB from a few
    kB. `ls` reads the real one from a plain zip, and refuses the bomb from the zip's directory (exit code 2)."""
    name = "D20130526T095207_IFCB013"
    for label, roi in (("real", None), ("bomb", bytes(64 << 20))):
        with zipfile.ZipFile(tmp_path / f"{label}.zip", "w", compression=zipfile.ZIP_DEFLATED) as archive:
            for ext in ("hdr", "adc", "roi"):
                data = (ifcb_data / "bins" / f"{name}.{ext}").read_bytes()
                archive.writestr(f"{name}.{ext}", roi if ext == "roi" and roi is not None else data)
    real = CliRunner().invoke(app, ["ls", f"zip://::{tmp_path / 'real.zip'}"])
    assert real.exit_code == 0 and "1 bins ok, 0 failed, 19 ROIs" in real.output, real.output
    bomb = CliRunner().invoke(app, ["ls", f"zip://::{tmp_path / 'bomb.zip'}"])
    assert bomb.exit_code == 2, bomb.output
    assert f"member '{name}.roi' declares 64.0 MiB inflated from" in bomb.output and "zip bomb" in bomb.output
