"""The bundle of an imported model (Keras 2 JSON + H5, or a Keras 3 file): the checks and provenance both share."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from model import architectures
from model.bundle import Bundle, check_classes, check_model, default_preprocess
from model.preprocess import PreprocessConfig
from model.versions import installed_versions

log = logging.getLogger(__name__)


def imported_bundle(
    model: Any,
    classes: Sequence[str],
    preprocess_config: PreprocessConfig | None,
    *,
    kind: str,
    source: dict[str, Any],
) -> Bundle:
    """A bundle of `model`, refused (`BundleError`) unless its class names are usable (`check_classes`), its input
    fits the preprocessing and its output the classes; named after the registered architecture it matches, else
    `<kind>:<model name>`."""
    check_classes(classes)
    config = preprocess_config or default_preprocess(model)
    check_model(model, len(classes), config)
    arch = architectures.registry_match(model) or f"{kind}:{model.name}"
    log.info("imported %s (%d layers, arch %s)", source, len(model.layers), arch)
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
