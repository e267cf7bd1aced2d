"""The model bundle: one file (a zip) that says everything a classifier run needs, loadable from any fsspec URL.

Layout: `bundle.json` (format version, ordered classes, arch name, preprocessing, provenance, content hash and,
when fitted, per-class `thresholds`) and the model: `model.keras` (Keras 3 native file) or, for an ONNX model
(`"runtime": "onnx"` in the metadata; absent means Keras), `model.onnx` (`model.formats.onnx_model`). A Keras bundle
may also carry its model's ONNX conversion, its *ONNX twin* (`model.onnx`, its sha256 under `onnx_twin` in the
metadata), which CPU workers run on ONNX Runtime (`model.inference.runtimes`): the same network, its scores within
`model.convert.to_onnx.TOLERANCE` of the Keras model's, so the same model to an output store. The content hash is
sha256 over the model bytes and the canonical metadata (which holds the twin's sha256), so an output store can record
exactly which model wrote it and a tampered file is refused on load. Thresholds are part of the metadata, hence of
the content hash, but not of the model's identity (`model_hash`: model bytes, classes, architecture, preprocessing),
which is what an output store records: the same weights with other thresholds (or with an ONNX twin added) are the
same model, and a store applies thresholds to its stored scores (`ifcbflow rethreshold`). A bundle without them
decides by plain argmax.

The preprocessing contract (`model.preprocess.PreprocessConfig`) is data in the metadata; a bundle written before
the contract had more parts than size, padding and normalisation has only those keys, and the missing ones mean
the ifcbUTOPIA contract. The model takes what the contract makes: a Keras model uint8 (size, size, channels)
images (the default: (size, size, 1)), an ONNX model the contract's input shape and layout; `check_model` holds that
at every save, load and import, so a mismatch stops a run before its first bin instead of failing every bin.

Format version 2 (OpenCV preprocessing, uint8 model input) refuses version 1 bundles (Pillow preprocessing,
float32 input) with a message rather than converting them: Pillow's bilinear resize filters when it shrinks and
OpenCV's INTER_LINEAR does not, so an old model would silently see other pixels than it was trained on. A model
from ifcbUTOPIA's Keras 2 weights is re-imported (`ifcbflow model import ARCH.json WEIGHTS.h5`: those weights were
trained on this OpenCV contract); a model trained by ifcbflow 1 is retrained.

This module reads, writes and verifies bundle files and imports no model runtime: building a bundle's model from
its bytes is `model.inference.load.load_bundle`'s (with `model.formats`), running it `model.inference.predictors`'.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import math
import tempfile
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import fsspec
import numpy as np

from model.decision import count_columns, threshold_array
from model.preprocess import PreprocessConfig
from model.safe_zip import MAX_MODEL_BYTES_ENV, UnsafeZipError, max_model_bytes, open_zip, read_member

log = logging.getLogger(__name__)

FORMAT = "ifcbflow-bundle"
FORMAT_VERSION = 2
#: Why each older format version is refused, and what to do instead.
_REFUSED_VERSIONS = {
    1: "it was written by an older ifcbflow (format version 1: Pillow preprocessing, float32 model input) and this "
    "ifcbflow preprocesses with OpenCV and feeds the model uint8, so the model would see other pixels than it was "
    "trained on; re-import the original Keras 2 weights (`ifcbflow model import ARCH.json WEIGHTS.h5 --classes ... "
    "--out NEW.zip`) or retrain (`ifcbflow train`)",
}
_META = "bundle.json"
_MODEL = "model.keras"
#: The model's member in the zip, by runtime (the metadata's "runtime"; absent: keras).
_MEMBERS = {"keras": _MODEL, "onnx": "model.onnx"}
#: A Keras bundle's ONNX twin: the same member name as an ONNX bundle's model.
_TWIN = _MEMBERS["onnx"]
_REQUIRED = ("format", "format_version", "classes", "arch", "preprocess", "provenance", "content_hash")


class BundleError(ValueError):
    """A bundle that cannot be used: not a bundle, tampered with, incomplete or of an unknown format."""


@dataclass
class Bundle:
    """A trained classifier with everything needed to apply it the same way it was trained (its scores:
    `model.inference.predictors.predict`)."""

    model: Any  # keras.Model or model.formats.onnx_model.OnnxModel; typed loosely so this module imports neither
    classes: list[str]
    preprocess: PreprocessConfig
    arch: str
    provenance: dict[str, Any] = field(default_factory=dict)
    content_hash: str = ""
    thresholds: dict[str, float] | None = None  # per class, `model.decision`'s rule; None: plain argmax
    onnx_twin: Any = None  # a Keras model's ONNX conversion (`model.formats.onnx_model.OnnxModel`), or None
    #: the predictor `model.inference.predictors.predict` made for the model, kept for its next call
    predictor: Any = field(default=None, init=False, repr=False, compare=False)


def check_model(model: Any, n_classes: int, config: PreprocessConfig) -> None:
    """Refuse a model that cannot take this preprocessing's images or does not give one score per class.

    A Keras model must have one uint8 input of the contract's shape (the default: (size, size, 1)) and one
    (n, n_classes) output; an ONNX model is checked by `OnnxModel.check`.
    """
    if model_runtime(model) == "onnx":
        model.check(n_classes, config)
        return
    if config.input_dtype != np.uint8:
        raise BundleError(
            f"a Keras model takes the contract's uint8 grey levels, but this contract makes {config.input_dtype} "
            "values (scale or mean/std): put the scaling inside the model (a Rescaling layer)"
        )
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        counts = f"{len(model.inputs)} and {len(model.outputs)}"
        raise BundleError(f"the model must have one input and one output, not {counts}")
    shape, size = tuple(model.input_shape[1:]), config.size
    if shape != config.input_shape:
        raise BundleError(
            f"the model's input shape {shape} does not match the preprocessing size {size}: "
            f"the model must take {config.input_shape} images ({config.describe()})"
        )
    dtype = model.inputs[0].dtype
    if dtype != "uint8":
        raise BundleError(
            f"the model takes {dtype} input but bundles feed it uint8; import it with `ifcbflow model import`, "
            "which adds the cast"
        )
    if len(model.output_shape) != 2 or model.output_shape[-1] != n_classes:
        raise BundleError(f"the model has {model.output_shape[-1]} outputs but {n_classes} class names were given")


def default_preprocess(model: Any) -> PreprocessConfig:
    """The contract at the model's input size, for an imported model (at the default size if the model has none, so
    that `check_model` then names both shapes)."""
    return PreprocessConfig(size=model.input_shape[1] or PreprocessConfig().size)


def checked_thresholds(thresholds: dict[str, float], classes: list[str]) -> dict[str, float]:
    """Thresholds as stored: one per class, in class order, each in [0, 1]; BundleError for anything else."""
    try:
        count_columns(classes, thresholded=True)  # no class may be named like the unclassified ROIs
        values = threshold_array(thresholds, classes)
    except ValueError as err:
        raise BundleError(str(err)) from None
    return dict(zip(classes, values.tolist(), strict=True))


def model_runtime(model: Any) -> str:
    """The runtime a loaded model runs on: "onnx" for an `OnnxModel` (its `runtime` attribute), else "keras"."""
    return getattr(model, "runtime", "keras")


def require_keras(runtime: str, context: str = "") -> None:
    """Refuse (`BundleError`, `context` before the reason) a model whose runtime, a model's or a bundle metadata's
    ("keras" or "onnx"), is not Keras: only a Keras model is converted to ONNX or carries an ONNX twin."""
    if runtime != "keras":
        raise BundleError(f"{context}this bundle's model is already an ONNX model")


def _metadata(bundle: Bundle) -> dict[str, Any]:
    metadata: dict[str, Any] = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "classes": list(bundle.classes),
        "arch": bundle.arch,
        "preprocess": bundle.preprocess.to_dict(),
        "provenance": bundle.provenance,
    }
    if bundle.thresholds is not None:  # absent, not null: a bundle without thresholds keeps its old bytes and hash
        metadata["thresholds"] = checked_thresholds(bundle.thresholds, list(bundle.classes))
    if model_runtime(bundle.model) != "keras":  # absent for Keras: such bundles keep their bytes and hash
        metadata["runtime"] = model_runtime(bundle.model)
    if bundle.onnx_twin is not None:
        metadata["onnx_twin"] = {"sha256": hashlib.sha256(bundle.onnx_twin.data).hexdigest()}
    return metadata


def _canonical(metadata: dict[str, Any]) -> bytes:
    """Metadata as bytes independent of key order and whitespace (the hash must not depend on formatting)."""
    return json.dumps(metadata, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False).encode()


def content_hash(model_bytes: bytes, metadata: dict[str, Any]) -> str:
    """sha256 over the model bytes and the canonical metadata (all keys except `content_hash` itself)."""
    digest = hashlib.sha256()
    digest.update(hashlib.sha256(model_bytes).digest())
    digest.update(_canonical({k: v for k, v in metadata.items() if k != "content_hash"}))
    return digest.hexdigest()


def _json_safe(value: Any) -> Any:
    """Provenance goes into JSON: numpy scalars become Python numbers, NaN/inf become None."""
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def check_classes(classes: Sequence[str]) -> None:
    """Refuse (`BundleError`, saying why) a class list that results could not carry: names must be non-empty,
    unique and ASCII. The IFCB Dashboard decodes a class file's `class_labels` as ASCII, so one accented letter
    would make every class file of the model unreadable there."""
    if any(not name for name in classes):
        raise BundleError(f"class names must not be empty, got {list(classes)}")
    if len(set(classes)) != len(classes):
        raise BundleError(f"class names must be unique, got {list(classes)}")
    foreign = [name for name in classes if not name.isascii()]
    if foreign:
        raise BundleError(
            f"class names must be ASCII (the IFCB Dashboard reads class_labels as ASCII): {', '.join(foreign)}; "
            "rename those classes (e.g. their folders or labels) without accents or symbols beyond ASCII"
        )


def save_bundle(bundle: Bundle, url: str, storage_options: dict[str, Any] | None = None) -> str:
    """Write the bundle to `url` (any fsspec URL) in one write; set and return its content hash."""
    check_classes(bundle.classes)
    check_model(bundle.model, len(bundle.classes), bundle.preprocess)
    if bundle.onnx_twin is not None:
        require_keras(model_runtime(bundle.model), "only a Keras model has an ONNX twin; ")
    bundle.provenance = _json_safe(bundle.provenance)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / _MEMBERS[model_runtime(bundle.model)]
        bundle.model.save(path)
        model_bytes = path.read_bytes()
    twin = None if bundle.onnx_twin is None else bundle.onnx_twin.data
    bundle.content_hash = _write(model_bytes, _metadata(bundle), url, storage_options, twin)
    log.info("saved bundle %s (%s, %d classes, hash %s)", url, bundle.arch, len(bundle.classes), bundle.content_hash)
    return bundle.content_hash


def save_with_thresholds(
    source_url: str,
    out_url: str,
    thresholds: dict[str, float],
    fit: dict[str, Any],
    storage_options: dict[str, Any] | None = None,
) -> str:
    """Write the bundle at `source_url` to `out_url` with new thresholds (and `fit`, how they were fitted, as
    `provenance.thresholds`); returns the new hash. The model file (and its ONNX twin) is copied byte for byte: the
    same model."""
    metadata, model_bytes, twin = read_verified(source_url, storage_options)
    metadata["thresholds"] = checked_thresholds(thresholds, list(metadata["classes"]))
    metadata["provenance"] = _json_safe({**metadata["provenance"], "thresholds": fit})
    digest = _write(model_bytes, metadata, out_url, storage_options, twin)
    log.info("saved bundle %s with new thresholds (hash %s, from %s)", out_url, digest, source_url)
    return digest


def save_with_twin(
    source_url: str,
    out_url: str,
    twin: Any,
    made: dict[str, Any],
    storage_options: dict[str, Any] | None = None,
) -> str:
    """Write the Keras bundle at `source_url` to `out_url` with `twin` (an `OnnxModel`) as its ONNX twin and `made`
    (how it was made) as `provenance.onnx_twin`; returns the new hash. The Keras model is copied byte for byte, so
    the new bundle has the same `model_hash`: the same model to an output store."""
    metadata, model_bytes, _ = read_verified(source_url, storage_options)
    require_keras(metadata.get("runtime", "keras"))
    metadata["onnx_twin"] = {"sha256": hashlib.sha256(twin.data).hexdigest()}
    metadata["provenance"] = _json_safe({**metadata["provenance"], "onnx_twin": made})
    digest = _write(model_bytes, metadata, out_url, storage_options, twin.data)
    log.info("saved bundle %s with an ONNX twin (hash %s, from %s)", out_url, digest, source_url)
    return digest


def _write(
    model_bytes: bytes,
    metadata: dict[str, Any],
    url: str,
    storage_options: dict[str, Any] | None,
    twin: bytes | None = None,
) -> str:
    """Hash the metadata (its old `content_hash` aside) and model, and write them (and the ONNX twin) as one zip in
    one write; returns the hash."""
    metadata = {**metadata, "content_hash": content_hash(model_bytes, metadata)}
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_STORED) as archive:
        archive.writestr(_META, json.dumps(metadata, indent=2, sort_keys=True))
        archive.writestr(_MEMBERS[metadata.get("runtime", "keras")], model_bytes)
        if twin is not None:
            archive.writestr(_TWIN, twin)
    with fsspec.open(url, "wb", **(storage_options or {})) as f:
        f.write(buffer.getvalue())
    return metadata["content_hash"]


def _verify(model_bytes: bytes, metadata: dict[str, Any], url: str) -> None:
    expected = content_hash(model_bytes, metadata)
    if expected != metadata["content_hash"]:
        raise BundleError(
            f"{url}: content hash mismatch (recorded {metadata['content_hash']}, computed {expected}); "
            "the bundle was modified after it was written"
        )


def model_file_limit() -> int:
    """`model.safe_zip.max_model_bytes()`, the bound on a model file's bytes; BundleError for a bad setting."""
    try:
        return max_model_bytes()
    except ValueError as err:
        raise BundleError(str(err)) from None


def read_model_file(url: str, storage_options: dict[str, Any] | None, what: str = "model bundle") -> bytes:
    """The bytes of a model file (a bundle, or a file `model import` reads) at any fsspec URL, read only up to
    `model_file_limit()`: BundleError for a larger file (nothing past the bound is read) or none."""
    limit = model_file_limit()
    try:
        with fsspec.open(url, "rb", **(storage_options or {})) as f:
            data = f.read(limit + 1)
    except FileNotFoundError:
        raise BundleError(f"no {what} at {url}") from None
    if len(data) > limit:
        raise BundleError(
            f"{url} is larger than {limit:,} bytes, the bound on a model file; not read (set {MAX_MODEL_BYTES_ENV} "
            "to a larger number of bytes for a model that truly is this large)"
        )
    return data


def _open_zip(data: bytes | IO[bytes], url: str) -> zipfile.ZipFile:
    """The bundle's zip, its directory checked against the bounds of `model.safe_zip` (no member is read yet)."""
    try:
        archive = open_zip(io.BytesIO(data) if isinstance(data, bytes) else data, url, model_file_limit())
    except zipfile.BadZipFile:
        raise BundleError(f"{url} is not an ifcbflow model bundle (not a zip file)") from None
    except UnsafeZipError as err:
        raise BundleError(str(err)) from None
    names = set(archive.namelist())
    if _META not in names or not names & set(_MEMBERS.values()):
        missing = [name for name in (_META, _MODEL) if name not in names]
        raise BundleError(f"{url} is not an ifcbflow model bundle (missing {', '.join(missing)})")
    return archive


def _read(archive: zipfile.ZipFile, name: str, url: str) -> bytes:
    """One member's bytes, streamed and bounded by its declared size (`model.safe_zip.read_member`)."""
    try:
        return read_member(archive, name, url)
    except UnsafeZipError as err:
        raise BundleError(str(err)) from None


def _member(metadata: dict[str, Any], archive: zipfile.ZipFile, url: str) -> str:
    """The zip member of the bundle's model, by its runtime; BundleError for an unknown runtime or a missing file."""
    runtime = metadata.get("runtime", "keras")
    if runtime not in _MEMBERS:
        raise BundleError(f"{url}: unknown model runtime {runtime!r}; this ifcbflow runs {', '.join(_MEMBERS)}")
    if _MEMBERS[runtime] not in archive.namelist():
        raise BundleError(f"{url} is not an ifcbflow model bundle (missing {_MEMBERS[runtime]})")
    return _MEMBERS[runtime]


def _twin_bytes(metadata: dict[str, Any], archive: zipfile.ZipFile, url: str) -> bytes | None:
    """The ONNX twin's bytes, checked against the sha256 the (hashed) metadata records; None when there is none."""
    recorded = metadata.get("onnx_twin")
    if recorded is None:
        return None
    if _TWIN not in archive.namelist():
        raise BundleError(f"{url}: the metadata records an ONNX twin but the bundle has no {_TWIN}")
    data = _read(archive, _TWIN, url)
    if hashlib.sha256(data).hexdigest() != recorded.get("sha256"):
        raise BundleError(f"{url}: the ONNX twin's sha256 differs from the recorded one; the bundle was modified")
    return data


def runtimes(metadata: dict[str, Any]) -> tuple[str, ...]:
    """The runtimes a bundle's metadata offers: ("keras",), ("keras", "onnx") with an ONNX twin, or ("onnx",)."""
    if metadata.get("runtime", "keras") == "onnx":
        return ("onnx",)
    return ("keras", "onnx") if metadata.get("onnx_twin") else ("keras",)


def _parse_metadata(archive: zipfile.ZipFile, url: str) -> dict[str, Any]:
    try:
        metadata = json.loads(_read(archive, _META, url))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise BundleError(f"{url}: {_META} is not valid JSON: {err}") from None
    if not isinstance(metadata, dict):
        raise BundleError(f"{url}: {_META} is not a JSON object")
    missing = [key for key in _REQUIRED if key not in metadata]
    if missing:
        raise BundleError(f"{url}: {_META} lacks required keys {missing}")
    if metadata["format"] == FORMAT and metadata["format_version"] in _REFUSED_VERSIONS:
        raise BundleError(f"{url}: this bundle cannot be used: {_REFUSED_VERSIONS[metadata['format_version']]}")
    if metadata["format"] != FORMAT or metadata["format_version"] != FORMAT_VERSION:
        raise BundleError(
            f"{url}: unsupported bundle format {metadata['format']!r} version {metadata['format_version']!r}; "
            f"this ifcbflow reads {FORMAT!r} version {FORMAT_VERSION}"
        )
    return metadata


def model_hash(model_bytes: bytes, metadata: dict[str, Any]) -> str:
    """The model's identity: sha256 over the model bytes, its classes, architecture and preprocessing.

    Unlike `content_hash` it leaves out thresholds and provenance: a bundle whose thresholds were refitted holds the
    same model, so its scores may go to the same store (thresholds are decisions on stored scores).
    """
    identity = {key: metadata.get(key) for key in ("classes", "arch", "preprocess")}
    digest = hashlib.sha256()
    digest.update(hashlib.sha256(model_bytes).digest())
    digest.update(_canonical(identity))
    return digest.hexdigest()


#: Model hashes by bundle content hash (which covers the model bytes): a bundle's model is read once per process.
_MODEL_HASHES: dict[str, str] = {}


def read_bundle_info(url: str, storage_options: dict[str, Any] | None = None) -> dict[str, Any]:
    """The bundle's metadata (classes, arch, preprocess, provenance, content_hash) and its `model_hash`, without
    building the model.

    The zip's directory sits at its end, so only that, the small metadata member and (once per process and bundle,
    for `model_hash`) the model member are fetched (ranged reads on object storage); the content hash is checked
    by `read_verified` (as `model.inference.load.load_bundle` reads a bundle).
    """
    try:
        with fsspec.open(url, "rb", **(storage_options or {})) as f:
            archive = _open_zip(f, url)
            metadata = _parse_metadata(archive, url)
            known = _MODEL_HASHES.get(metadata["content_hash"])
            if known is None:
                model_bytes = _read(archive, _member(metadata, archive, url), url)
                known = _MODEL_HASHES[metadata["content_hash"]] = model_hash(model_bytes, metadata)
    except FileNotFoundError:
        raise BundleError(f"no model bundle at {url}") from None
    return {**metadata, "model_hash": known}


def read_verified(
    url: str, storage_options: dict[str, Any] | None = None
) -> tuple[dict[str, Any], bytes, bytes | None]:
    """(metadata, model bytes, ONNX twin bytes or None) of the bundle at any fsspec URL, read only up to
    `model_file_limit()`: BundleError unless it is a bundle of this format whose content hash and twin's sha256 match
    what it records. Builds no model (`model.inference.load.load_bundle` does)."""
    archive = _open_zip(read_model_file(url, storage_options), url)
    metadata = _parse_metadata(archive, url)
    model_bytes = _read(archive, _member(metadata, archive, url), url)
    _verify(model_bytes, metadata, url)
    return metadata, model_bytes, _twin_bytes(metadata, archive, url)


def preprocess_of(metadata: dict[str, Any], url: str) -> PreprocessConfig:
    """The preprocessing contract a bundle's metadata records; BundleError for bad parameters."""
    try:
        return PreprocessConfig.from_dict(metadata["preprocess"])
    except (TypeError, ValueError) as err:
        raise BundleError(f"{url}: bad preprocessing parameters: {err}") from None


def checked_bundle(metadata: dict[str, Any], preprocess: PreprocessConfig, model: Any, twin: Any, url: str) -> Bundle:
    """The `Bundle` of verified metadata (`read_verified`), its contract (`preprocess_of`) and the model (and ONNX
    twin, or None) built from its bytes; BundleError naming `url` where the model does not fit the classes and the
    contract (`check_model`) or the thresholds are bad."""
    classes = list(metadata["classes"])
    try:
        check_model(model, len(classes), preprocess)
        thresholds = metadata.get("thresholds")
        if thresholds is not None:
            thresholds = checked_thresholds(thresholds, classes)
    except BundleError as err:
        raise BundleError(f"{url}: {err}") from None
    return Bundle(
        model=model,
        classes=classes,
        preprocess=preprocess,
        arch=metadata["arch"],
        provenance=metadata["provenance"],
        content_hash=metadata["content_hash"],
        thresholds=thresholds,
        onnx_twin=twin,
    )
