"""The user's guide (docs/, mkdocs.yml): it builds strictly, its command reference is complete, and the tutorial's
commands run as written.

The build needs the `docs` extra; where it is not installed these tests skip, saying so, except under CI (the CI
variable set), where they fail: CI must build the site.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
import textwrap
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
import typer.main

from pipeline.cli.app import app

REPO = Path(__file__).resolve().parent.parent
DOCS_MODULES = ("mkdocs", "material", "mkdocstrings", "mkdocstrings_handlers.python")


def _missing_docs_tools() -> list[str]:
    missing = []
    for name in DOCS_MODULES:
        try:
            if importlib.util.find_spec(name) is None:
                missing.append(name)
        except ModuleNotFoundError:
            missing.append(name)
    return missing


_MISSING = _missing_docs_tools()
if _MISSING and os.environ.get("CI"):
    pytest.fail(f"CI must build the docs, but {', '.join(_MISSING)} is not installed (the `docs` extra)", pytrace=False)
pytestmark = pytest.mark.skipif(
    bool(_MISSING), reason=f"the `docs` extra is not installed ({', '.join(_MISSING)}): pip install -e '.[docs]'"
)


def _env() -> dict[str, str]:
    """This checkout's code first, and this Python's scripts (`ifcbflow`, `mkdocs`) on PATH."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    env["PATH"] = os.pathsep.join((str(Path(sys.executable).parent), env.get("PATH", "")))
    env["NO_MKDOCS_2_WARNING"] = "1"  # a notice about MkDocs' future on every build
    return env


def mkdocs_build(config: Path, site: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file", str(config), "--site-dir", str(site)],
        cwd=config.parent, env=_env(), capture_output=True, text=True, timeout=600,
    )  # fmt: skip


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The project's site, built strictly into a temporary folder."""
    out = tmp_path_factory.mktemp("site")
    result = mkdocs_build(REPO / "mkdocs.yml", out)
    assert result.returncode == 0, f"mkdocs build --strict failed:\n{result.stdout}\n{result.stderr}"
    return out


def test_every_page_in_the_navigation_is_built(site: Path) -> None:
    import yaml

    def pages(nav: list) -> list[str]:
        out = []
        for item in nav:
            value = next(iter(item.values())) if isinstance(item, dict) else item
            out.extend(pages(value) if isinstance(value, list) else [value])
        return out

    config = yaml.load((REPO / "mkdocs.yml").read_text(), Loader=yaml.BaseLoader)
    missing = [page for page in pages(config["nav"]) if not (site / page.replace(".md", ".html")).is_file()]
    assert missing == []
    assert len(pages(config["nav"])) >= 20


class _Sections(HTMLParser):
    """The text of an HTML page, cut at its h2/h3 headings: {heading text: text up to the next heading}."""

    def __init__(self) -> None:
        super().__init__()
        self.sections: dict[str, str] = {}
        self._heading: list[str] | None = None
        self._current = ""

    def handle_starttag(self, tag: str, attrs: list) -> None:
        if tag in ("h2", "h3"):
            self._heading = []

    def handle_endtag(self, tag: str) -> None:
        if tag in ("h2", "h3") and self._heading is not None:
            self._current = "".join(self._heading).replace("¶", "").strip()
            self.sections[self._current] = ""
            self._heading = None

    def handle_data(self, data: str) -> None:
        if self._heading is not None:
            self._heading.append(data)
        elif self._current:
            self.sections[self._current] += data


def _commands(command: Any, path: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], Any]]:
    """Every command of the click tree (typer carries its own click: groups are known by their `commands`)."""
    out = [(path, command)]
    for name, sub in getattr(command, "commands", {}).items():
        out.extend(_commands(sub, (*path, name)))
    return out


def test_cli_reference_has_every_command_and_option(site: Path) -> None:
    parser = _Sections()
    parser.feed((site / "reference" / "cli.html").read_text())
    tree = _commands(typer.main.get_command(app))
    assert len(tree) > 15
    for path, command in tree:
        if not path:
            continue  # the top level is the page itself
        heading = " ".join(("ifcbflow", *path))
        assert heading in parser.sections, f"no section for `{heading}` in the command reference"
        text = parser.sections[heading]
        for param in command.params:
            if getattr(param, "hidden", False):
                continue
            if param.param_type_name == "option":
                names = [*param.opts, *param.secondary_opts]
            else:
                names = [param.metavar or param.name]  # an argument is shown by its metavar
            for name in names:
                assert re.search(rf"(?<![\w-]){re.escape(name)}(?![\w-])", text), f"`{heading}`: {name} missing"
        if command.help:
            start = " ".join(command.help.replace("`", "").split())[:40]  # `code` is rendered without its backticks
            assert start in " ".join(text.split()), f"`{heading}`: its help text is missing"


def test_cnn_page_is_drawn_from_the_model(site: Path) -> None:
    page = (site / "background" / "utopia-cnn.html").read_text()
    svg = (site / "background" / "utopia-b3.svg").read_text()
    # The published ifcbUTOPIA model-cnn-v1-b3 has 2,920,410 parameters (see ../shared/data/utopia/SOURCES.md).
    assert "2,920,410 parameters in all" in page
    assert "block10_conv" in page and "probabilities" in page
    assert svg.startswith("<svg") and svg.count("<rect") >= 20
    assert "utopia-b3.svg" in page


#: Each fault, and the warning of MkDocs (or of mkdocstrings' autorefs) that the strict build turns into a failure.
FAULTS = {
    "broken link": "contains a link 'no-such-page.md', but the target is not found",
    "page not in nav": "orphan.md",
    "unresolved reference": "Could not find cross-reference target 'example.no_such_thing'",
}


@pytest.mark.parametrize("fault", [None, *FAULTS])
def test_strict_build_fails_on_each_fault(tmp_path: Path, fault: str | None) -> None:
    """A small site with the project's settings builds, and fails with each fault the strict build must catch."""
    docs = tmp_path / "docs"
    docs.mkdir()
    module = '"""A module.\n\nSee [the thing][example.thing]."""\n\nthing = 1\n"""A thing."""\n'
    (tmp_path / "example.py").write_text(module)
    (docs / "index.md").write_text("# Home\n\nSee [the API](api.md).\n")
    (docs / "api.md").write_text("# API\n\n::: example\n")
    nav = ["index.md", "api.md"]
    if fault == "broken link":
        (docs / "index.md").write_text("# Home\n\nSee [the API](api.md) and [nothing](no-such-page.md).\n")
    elif fault == "page not in nav":
        (docs / "orphan.md").write_text("# Orphan\n")
    elif fault == "unresolved reference":
        (tmp_path / "example.py").write_text('"""A module.\n\nSee [the thing][example.no_such_thing]."""\n')
    config = tmp_path / "mkdocs.yml"
    config.write_text(textwrap.dedent(f"""\
        INHERIT: {REPO / "mkdocs.yml"}
        docs_dir: docs
        hooks: []
        nav: {json.dumps(nav)}
        """))  # fmt: skip
    result = mkdocs_build(config, tmp_path / "site")
    if fault is None:
        assert result.returncode == 0, result.stderr
    else:
        assert result.returncode != 0, f"the strict build passed despite a {fault}"
        output = result.stdout + result.stderr
        assert "warnings in strict mode" in output and FAULTS[fault] in output, output


_BLOCK = re.compile(r"^```([^\n]*)\n(.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)
#: What the tutorial's fences may say: blocks run by the test, and the installation, which it cannot run.
RUN, NOT_RUN = {"bash", "python"}, {"{.bash .install}"}


@pytest.mark.slow
def test_tutorial_commands_run_as_written(tmp_path: Path) -> None:
    """Every bash and python block of the tutorial, in order, in one empty folder, with this checkout's ifcbflow."""
    blocks = _BLOCK.findall((REPO / "docs" / "tutorial.md").read_text())
    assert {info.strip() for info, _ in blocks} <= RUN | NOT_RUN, "a block the test neither runs nor knows"
    runnable = [(info.strip(), code) for info, code in blocks if info.strip() in RUN]
    assert len(runnable) >= 8
    for info, code in runnable:
        command = ["bash", "-e", "-c", code] if info == "bash" else [sys.executable, "-c", code]
        result = subprocess.run(command, cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=600)
        output = f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
        assert result.returncode == 0, f"tutorial block failed:\n{code}\n{output}"
    # What the tutorial says these commands leave behind.
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["bins_complete"] == 6 and report["rois"] == 360, report
    assert len(list((tmp_path / "dashboard").rglob("*_class.h5"))) == 6
    assert len((tmp_path / "bins.csv").read_text().splitlines()) == 1 + 6
    assert (tmp_path / "bins.csv.json").is_file()
    assert (tmp_path / "concentrations.png").read_bytes()[:4] == b"\x89PNG"
    assert len(list((tmp_path / "rois").glob("D20240101T000000_IFCB999_*.png"))) > 0


def test_watch_page_names_exactly_the_metrics_a_watch_serves() -> None:
    """The metric table and the alert rules of the watch guide use the names Prometheus scrapes."""
    from prometheus_client import generate_latest

    from pipeline.job.metrics import WatchMetrics

    served = {
        line.split("{")[0].split()[0]
        for line in generate_latest(WatchMetrics().registry).decode().splitlines()
        if line and not line.startswith("#") and not line.split("{")[0].split()[0].endswith("_created")
    }
    named = set(re.findall(r"\bifcbflow_[a-z_]+", (REPO / "docs" / "how-to" / "watch.md").read_text()))
    assert served and named == served
