"""The bundle of an imported model (Keras 2 JSON + H5, a Keras 3 file, or an ONNX graph): the checks and provenance
they share."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from model.bundle import Bundle, check_classes, check_model, default_preprocess, model_runtime
from model.preprocess import PreprocessConfig
from model.versions import installed_versions

log = logging.getLogger(__name__)


def model_input_size(model: Any, config: PreprocessConfig) -> int | None:
    """The image size of the model's input as the contract's layout reads it (None where the graph leaves it open).

    Both runtimes give the input shape batch first: (n, size, size, channels) or (n, channels, size, size).
    """
    shape = tuple(model.input_shape)
    if len(shape) != 4:
        return None
    return shape[2] if config.layout == "first" else shape[1]


def imported_bundle(
    model: Any,
    classes: Sequence[str],
    preprocess_config: PreprocessConfig | None,
    *,
    kind: str,
    source: dict[str, Any],
    size_from_model: bool = False,
) -> Bundle:
    """A bundle of `model`, refused (`BundleError`) unless its class names are usable (`check_classes`), its input
    fits the preprocessing and its output the classes; named after the registered architecture it matches, else
    `<kind>:<model name>`.

    Without a `preprocess_config`, the ifcbUTOPIA contract at the model's input size; with `size_from_model`, the
    given contract at the model's input size (where the model fixes one).
    """
    check_classes(classes)
    config = preprocess_config or default_preprocess(model)
    if size_from_model and (size := model_input_size(model, config)):
        config = replace(config, size=size)
    check_model(model, len(classes), config)
    if model_runtime(model) == "onnx":
        arch = f"{kind}:{model.name}"
    else:
        from model import architectures

        arch = architectures.registry_match(model) or f"{kind}:{model.name}"
    log.info("imported %s (arch %s)", source, arch)
    return Bundle(
        model=model,
        classes=list(classes),
        preprocess=config,
        arch=arch,
        provenance={
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
            "imported_from": source,
            "versions": installed_versions(),
        },
    )
