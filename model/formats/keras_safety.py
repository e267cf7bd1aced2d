"""What a Keras 3 `.keras` file may name before Keras is allowed to build it: its own layers and functions only;
and the loading of such a file (`load_keras_model`), which checks that first.

Keras 3 builds a model from the `config.json` inside the file: every object there is a dict naming a `module` and a
`class_name` that Keras imports and instantiates. Keras' `safe_mode` (always on here) refuses Python lambdas, and an
unregistered class or function cannot be found; but the refusal reads "could not be deserialized properly" or
suggests `safe_mode=False`, which is the one thing a user of a shared model must not do, and safe mode has had holes
(CVE-2025-1550, CVE-2025-8747: functions of other modules named in the config). So `check_keras_config` reads the
config as plain JSON first and refuses, naming the layer and what to do instead:

- a `Lambda` layer (its Python code would run when the model is built),
- any object whose module is not Keras' own (`keras`, `keras.*`), which is what a custom layer, model or
  registered object (`registered_name` "package>Name") is,
- a function reference (`"class_name": "function"`) outside Keras' activations, losses and metrics.

Keras then loads what passed, still in safe mode. Keras 2 models are never built by Keras from their JSON
(`model.convert.from_keras2` rebuilds them from a whitelist), and ONNX graphs are data (`model.formats.onnx_model`).
"""

from __future__ import annotations

import io
import json
import tempfile
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from model.bundle import BundleError, model_file_limit
from model.safe_zip import UnsafeZipError, open_zip, read_member

#: Modules a `.keras` config may name functions of: Keras' activations, losses and metrics (a compiled model's).
FUNCTION_MODULES = tuple(
    f"keras.{src}{kind}" for src in ("", "src.") for kind in ("activations", "losses", "metrics")
)
_ADVICE = (
    "ifcbflow loads no code from model files: rebuild the model from Keras' built-in layers (e.g. a Rescaling or "
    "Activation layer instead of a Lambda) and save it again, or export it to ONNX and import that"
)


def _objects(node: Any, where: str) -> Iterator[tuple[dict[str, Any], str]]:
    """Every dict of the config that names a class, with the name of the layer it sits in."""
    if isinstance(node, dict):
        if "class_name" in node:
            config = node.get("config")
            if isinstance(config, dict) and isinstance(config.get("name"), str):
                where = config["name"]
            yield node, where
        for value in node.values():
            yield from _objects(value, where)
    elif isinstance(node, list):
        for value in node:
            yield from _objects(value, where)


def _is_keras(module: Any) -> bool:
    return isinstance(module, str) and (module == "keras" or module.startswith("keras."))


def check_keras_config(config: Any, what: str) -> None:
    """Refuse (BundleError naming the layer, the object and what to do) a `.keras` model config that names a Lambda
    layer, an object outside Keras or a function outside Keras' activations, losses and metrics."""
    for item, layer in _objects(config, "the model"):
        name, module = item.get("class_name"), item.get("module")
        if name == "__keras_tensor__" and module is None:  # a reference to a layer's output, not an object
            continue
        if name in ("Lambda", "__lambda__"):
            raise BundleError(f"{what}: layer {layer!r} is a Lambda layer, Python code the file would run; {_ADVICE}")
        if name == "function":
            if module not in FUNCTION_MODULES:
                function = f"{module}.{item.get('config')}"
                raise BundleError(f"{what}: layer {layer!r} names the function {function}, not Keras' own; {_ADVICE}")
            continue
        if not _is_keras(module):
            shown = item.get("registered_name") or name
            raise BundleError(
                f"{what}: layer {layer!r} is a custom object {shown!r} (module {module}), code from outside Keras; "
                f"{_ADVICE}"
            )


def load_keras_model(data: bytes, what: str) -> Any:
    """A Keras 3 native file's bytes -> the model, in safe mode (no code from the file runs) and uncompiled;
    BundleError for a file that is not one, a zip bomb (`model.safe_zip`), a config naming code
    (`check_keras_config`) or a model safe mode refuses."""
    import keras

    try:  # Keras bounds its members only past 4 GiB: a bomb inside is refused before Keras opens the file
        with open_zip(io.BytesIO(data), what, model_file_limit()) as archive:
            config = json.loads(read_member(archive, "config.json", what))
    except zipfile.BadZipFile:
        raise BundleError(f"{what} cannot be loaded: not a zip file, as every .keras file is") from None
    except KeyError:
        raise BundleError(f"{what} cannot be loaded: it has no config.json") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise BundleError(f"{what}: its config.json is not JSON: {err}") from None
    except UnsafeZipError as err:
        raise BundleError(str(err)) from None
    check_keras_config(config, what)  # names a Lambda or custom object before Keras would
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.keras"
        path.write_bytes(data)
        try:
            return keras.saving.load_model(path, compile=False, safe_mode=True)
        except Exception as err:  # Keras raises many types for a bad file; all mean the same to the caller
            raise BundleError(f"{what} cannot be loaded: {err}") from err
