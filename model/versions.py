"""Installed versions of the packages that decide the numbers, read from package metadata (nothing is imported).

Recorded in every bundle's provenance and every output store, so a result can always say what computed it.
"""

from __future__ import annotations

import platform
from importlib import metadata

#: {name recorded: distributions that provide it, first found wins} (TensorFlow ships as several distributions).
RECORDED: dict[str, tuple[str, ...]] = {
    "ifcbflow": ("ifcbflow",),
    "tensorflow": ("tensorflow", "tensorflow-cpu"),
    "keras": ("keras",),
    "jax": ("jax",),
    "numpy": ("numpy",),
    "opencv": ("opencv-python-headless", "opencv-python"),
    "pillow": ("pillow",),
    "onnxruntime": ("onnxruntime", "onnxruntime-gpu"),
    "zarr": ("zarr",),
    "dask": ("dask",),
    "distributed": ("distributed",),
}


def installed_versions() -> dict[str, str]:
    """{package: version} for the recorded packages that are installed, plus the Python version."""
    found = {}
    for name, distributions in RECORDED.items():
        for distribution in distributions:
            try:
                found[name] = metadata.version(distribution)
                break
            except metadata.PackageNotFoundError:
                continue
    found["python"] = platform.python_version()
    return found
