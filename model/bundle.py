"""The model bundle: one file (a zip) that says everything a classifier run needs, loadable from any fsspec URL.

Layout: `bundle.json` (format version, ordered classes, arch name, preprocessing, provenance, content hash) and
`model.keras` (Keras 3 native file). The content hash is sha256 over the model bytes and the canonical metadata,
so an output store can record exactly which model wrote it and a tampered file is refused on load.
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

from model.preprocess import PreprocessConfig, preprocess_batch

log = logging.getLogger(__name__)

FORMAT = "ifcbflow-bundle"
FORMAT_VERSION = 1
_META = "bundle.json"
_MODEL = "model.keras"
_REQUIRED = ("format", "format_version", "classes", "arch", "preprocess", "provenance", "content_hash")


class BundleError(ValueError):
    """A bundle that cannot be used: not a bundle, tampered with, incomplete or of an unknown format."""


@dataclass
class Bundle:
    """A trained classifier with everything needed to apply it the same way it was trained."""

    model: Any  # keras.Model; typed loosely so importing this module does not import Keras
    classes: list[str]
    preprocess: PreprocessConfig
    arch: str
    provenance: dict[str, Any] = field(default_factory=dict)
    content_hash: str = ""

    def predict(self, images: Sequence[np.ndarray], batch_size: int = 256) -> np.ndarray:
        """Class probabilities float32 (n, n_classes) for uint8 2-D ROIs, in `self.classes` order.

        Preprocessing runs per batch so memory stays bounded for any number of images.
        """
        out = np.empty((len(images), len(self.classes)), dtype=np.float32)
        for start in range(0, len(images), batch_size):
            batch = preprocess_batch(images[start : start + batch_size], self.preprocess)
            out[start : start + len(batch)] = np.asarray(self.model.predict_on_batch(batch), dtype=np.float32)
        return out


def _metadata(bundle: Bundle) -> dict[str, Any]:
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "classes": list(bundle.classes),
        "arch": bundle.arch,
        "preprocess": bundle.preprocess.to_dict(),
        "provenance": bundle.provenance,
    }


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


def save_bundle(bundle: Bundle, url: str, storage_options: dict[str, Any] | None = None) -> str:
    """Write the bundle to `url` (any fsspec URL) in one write; set and return its content hash."""
    if len(set(bundle.classes)) != len(bundle.classes):
        raise BundleError(f"class names must be unique, got {bundle.classes}")
    n_outputs = bundle.model.output_shape[-1]
    if n_outputs != len(bundle.classes):
        raise BundleError(f"the model has {n_outputs} outputs but {len(bundle.classes)} classes were given")
    bundle.provenance = _json_safe(bundle.provenance)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / _MODEL
        bundle.model.save(path)
        model_bytes = path.read_bytes()
    metadata = _metadata(bundle)
    metadata["content_hash"] = content_hash(model_bytes, metadata)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_STORED) as archive:
        archive.writestr(_META, json.dumps(metadata, indent=2, sort_keys=True))
        archive.writestr(_MODEL, model_bytes)
    with fsspec.open(url, "wb", **(storage_options or {})) as f:
        f.write(buffer.getvalue())
    bundle.content_hash = metadata["content_hash"]
    log.info("saved bundle %s (%s, %d classes, hash %s)", url, bundle.arch, len(bundle.classes), bundle.content_hash)
    return bundle.content_hash


def _read_bytes(url: str, storage_options: dict[str, Any] | None) -> bytes:
    try:
        with fsspec.open(url, "rb", **(storage_options or {})) as f:
            return f.read()
    except FileNotFoundError:
        raise BundleError(f"no model bundle at {url}") from None


def _open_zip(data: bytes | IO[bytes], url: str) -> zipfile.ZipFile:
    try:
        archive = zipfile.ZipFile(io.BytesIO(data) if isinstance(data, bytes) else data)
    except zipfile.BadZipFile:
        raise BundleError(f"{url} is not an ifcbflow model bundle (not a zip file)") from None
    missing = {_META, _MODEL} - set(archive.namelist())
    if missing:
        raise BundleError(f"{url} is not an ifcbflow model bundle (missing {', '.join(sorted(missing))})")
    return archive


def _parse_metadata(archive: zipfile.ZipFile, url: str) -> dict[str, Any]:
    try:
        metadata = json.loads(archive.read(_META))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise BundleError(f"{url}: {_META} is not valid JSON: {err}") from None
    if not isinstance(metadata, dict):
        raise BundleError(f"{url}: {_META} is not a JSON object")
    missing = [key for key in _REQUIRED if key not in metadata]
    if missing:
        raise BundleError(f"{url}: {_META} lacks required keys {missing}")
    if metadata["format"] != FORMAT or metadata["format_version"] != FORMAT_VERSION:
        raise BundleError(
            f"{url}: unsupported bundle format {metadata['format']!r} version {metadata['format_version']!r}; "
            f"this ifcbflow reads {FORMAT!r} version {FORMAT_VERSION}"
        )
    return metadata


def read_bundle_info(url: str, storage_options: dict[str, Any] | None = None) -> dict[str, Any]:
    """The bundle's metadata (classes, arch, preprocess, provenance, content_hash) without building the model.

    The zip's directory sits at its end, so only that and the small metadata member are fetched (a few ranged
    reads on object storage); the hash is checked by `load_bundle`, where the model bytes are read anyway.
    """
    try:
        with fsspec.open(url, "rb", **(storage_options or {})) as f:
            return _parse_metadata(_open_zip(f, url), url)
    except FileNotFoundError:
        raise BundleError(f"no model bundle at {url}") from None


def load_bundle(url: str, storage_options: dict[str, Any] | None = None) -> Bundle:
    """Load and verify a bundle from any fsspec URL; Keras loads in safe mode (no arbitrary code from the file)."""
    import keras

    archive = _open_zip(_read_bytes(url, storage_options), url)
    metadata = _parse_metadata(archive, url)
    model_bytes = archive.read(_MODEL)
    expected = content_hash(model_bytes, metadata)
    if expected != metadata["content_hash"]:
        raise BundleError(
            f"{url}: content hash mismatch (recorded {metadata['content_hash']}, computed {expected}); "
            "the bundle was modified after it was written"
        )
    try:
        preprocess = PreprocessConfig.from_dict(metadata["preprocess"])
    except (TypeError, ValueError) as err:
        raise BundleError(f"{url}: bad preprocessing parameters: {err}") from None
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / _MODEL
        path.write_bytes(model_bytes)
        try:
            model = keras.saving.load_model(path, compile=False, safe_mode=True)
        except Exception as err:  # Keras raises many types for a bad file; all mean the same to the caller
            raise BundleError(f"{url}: the model inside the bundle cannot be loaded: {err}") from err
    classes = list(metadata["classes"])
    if model.output_shape[-1] != len(classes):
        raise BundleError(f"{url}: the model has {model.output_shape[-1]} outputs but {len(classes)} classes")
    return Bundle(
        model=model,
        classes=classes,
        preprocess=preprocess,
        arch=metadata["arch"],
        provenance=metadata["provenance"],
        content_hash=metadata["content_hash"],
    )
