"""pyproject.toml and environment.yml pin the same versions, so pip and conda users run the same stack."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
#: Extras environment.yml must carry besides the core dependencies (the CPU runtime); the other extras (gpu, gcs,
#: test) are checked for the packages environment.yml lists, since a CPU and a CUDA TensorFlow cannot share one
#: environment and the test tools are optional there.
REQUIRED_EXTRAS = ("cpu",)
_PIN = re.compile(r"^\s*([A-Za-z0-9_.\-]+)(?:\[[^\]]*\])?\s*(==|=)\s*([^\s;,=]+)")


def _name(text: str) -> str:
    return re.sub(r"[-_.]+", "-", text).lower()


def _pins(requirements: list[str]) -> dict[str, str]:
    pins = {}
    for requirement in requirements:
        if (match := _PIN.match(requirement)) is not None:
            pins[_name(match[1])] = match[3]
    return pins


def _pyproject() -> tuple[dict[str, str], dict[str, str]]:
    """(pins that environment.yml must have, pins it may have) from pyproject.toml."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    extras = project.get("optional-dependencies", {})
    required = _pins(project["dependencies"] + [r for extra in REQUIRED_EXTRAS for r in extras.get(extra, [])])
    optional = _pins([r for name, reqs in extras.items() if name not in REQUIRED_EXTRAS for r in reqs])
    return required, optional


def _environment() -> dict[str, str]:
    """Every `name=version` / `name==version` in environment.yml, conda and pip sections alike."""
    path = REPO / "environment.yml"
    assert path.exists(), "environment.yml is missing: conda users install from it"
    entries: list[str] = []
    for item in yaml.safe_load(path.read_text()).get("dependencies", []):
        if isinstance(item, dict):
            entries.extend(item.get("pip", []))
        else:
            entries.append(item)
    return _pins(entries)


def test_pyproject_pins_every_dependency_exactly() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    every = project["dependencies"] + [r for reqs in project.get("optional-dependencies", {}).values() for r in reqs]
    unpinned = [r for r in every if "==" not in r]
    assert unpinned == [], f"dependencies without an exact pin: {unpinned}"


def test_environment_yml_has_the_same_versions() -> None:
    required, optional = _pyproject()
    environment = _environment()
    missing = sorted(set(required) - set(environment))
    assert missing == [], f"pinned in pyproject.toml but absent from environment.yml: {missing}"
    differ = {
        name: (version, environment[name])
        for name, version in {**optional, **required}.items()
        if name in environment and environment[name] != version
    }
    assert differ == {}, f"pyproject.toml vs environment.yml versions differ: {differ}"
