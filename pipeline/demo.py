"""The demo: `python -m pipeline.demo --out DIR` runs the whole story on a small synthetic archive.

Each step is one call in `main()`, in the order a user would run the commands.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import typer

from pipeline.archive import scan_archive
from pipeline.cli_archive import format_listing_header, format_listing_line, listing_records
from pipeline.synth import write_synthetic_archive

DEMO_BINS, DEMO_ROIS, DEMO_CLASSES, DEMO_SEED = 6, 60, 4, 0


def synthesize(out: Path) -> str:
    """Step 1: a small synthetic archive (and its labels.csv) in OUT/archive."""
    archive = str(out / "archive")
    write_synthetic_archive(archive, bins=DEMO_BINS, rois=DEMO_ROIS, classes=DEMO_CLASSES, seed=DEMO_SEED)
    return archive


def list_archive(archive: str) -> None:
    """Step 2: what `ifcbflow ls` prints for it."""
    typer.echo(format_listing_header())
    for record in listing_records(scan_archive(archive)):
        typer.echo(format_listing_line(record))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m pipeline.demo", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="Folder for everything the demo writes.")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    archive = synthesize(args.out)
    list_archive(archive)


if __name__ == "__main__":
    main()
