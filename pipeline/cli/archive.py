"""CLI commands on raw archives: `ls` (what is there), `extract` (a bin's ROIs, raw or as the model sees them, as PNG),
`synth` (a test archive)."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import typer
from PIL import Image
from rich.progress import Progress

from pipeline.cli.options import (
    EXCLUDE_FOLDERS_HELP,
    STORAGE_OPTIONS_HELP,
    parse_folder_list,
    parse_storage_options,
    parse_window,
)
from pipeline.ifcb.archive import bin_files_at, scan_archive
from pipeline.ifcb.bins import BinMeta, read_bin_images, read_bin_meta
from pipeline.ifcb.errors import BinFailure, IfcbFormatError
from pipeline.ifcb.identifiers import roi_id
from pipeline.ifcb.synth import SYNTH_CLASSES, write_synthetic_archive

if TYPE_CHECKING:
    from model.preprocess import PreprocessConfig

LISTING_COLUMNS = (
    "bin", "instrument", "time", "rois", "ml_analyzed", "status", "reason", "warnings",
    "run_type", "sample_type", "latitude", "longitude",
)  # fmt: skip


def listing_records(results: Iterable[BinMeta | BinFailure]) -> Iterator[dict[str, Any]]:
    """One flat record per bin (the `ls --json` objects): ok bins with counts, what the reader forgave in their
    files (`warnings`) and what their header says of the sample (`pipeline.ifcb.sample`: run and sample type,
    position; None where it does not say); bead runs by their header as status "beads", the reason saying why
    (`classify` leaves them out unless `--include-beads`); failed bins with their reason."""
    for result in results:
        if isinstance(result, BinFailure):
            yield {
                "bin": result.bin, "instrument": None, "time": None, "rois": None, "ml_analyzed": None,
                "status": "failed", "reason": f"{result.stage}: {result.reason}", "warnings": [],
                "run_type": None, "sample_type": None, "latitude": None, "longitude": None,
            }  # fmt: skip
        else:
            sample = result.sample
            yield {
                "bin": result.bin.id, "instrument": result.bin.instrument, "time": result.bin.time.isoformat(),
                "rois": result.n_rois, "ml_analyzed": result.ml_analyzed,
                "status": "beads" if sample.bead_run else "ok", "reason": sample.bead_reason or None,
                "warnings": result.warnings, "run_type": sample.run_type, "sample_type": sample.sample_type,
                "latitude": sample.latitude, "longitude": sample.longitude,
            }  # fmt: skip


def format_listing_header() -> str:
    return f"{'bin':<26} {'instrument':<10} {'time (UTC)':<20} {'rois':>6} {'ml_analyzed':>12}  status"


def format_listing_line(record: dict[str, Any]) -> str:
    """A fixed-width line of the `ls` table."""
    if record["status"] == "failed":
        return f"{record['bin']:<26} {'':<10} {'':<20} {'':>6} {'':>12}  failed: {record['reason']}"
    ml = "-" if record["ml_analyzed"] is None else f"{record['ml_analyzed']:.6f}"
    time = record["time"][:19].replace("T", " ")
    status = "ok" if record["status"] == "ok" else f"beads: {record['reason']} (left out of classify)"
    warned = "".join(f"; warning: {warning}" for warning in record["warnings"])
    return f"{record['bin']:<26} {record['instrument']:<10} {time:<20} {record['rois']:>6} {ml:>12}  {status}{warned}"


def ls(
    archive_url: str = typer.Argument(..., help="Archive folder: a local path, file://, s3://bucket/prefix, gs://..."),
    as_json: bool = typer.Option(
        False, "--json", help="One JSON object per line: " + ", ".join(LISTING_COLUMNS) + "."
    ),
    start: str | None = typer.Option(None, "--start", help="Only bins sampled at or after this ISO time (UTC)."),
    end: str | None = typer.Option(None, "--end", help="Only bins sampled before this ISO time (UTC)."),
    storage_options: str | None = typer.Option(None, "--storage-options", help=STORAGE_OPTIONS_HELP),
    exclude_folders: str | None = typer.Option(None, "--exclude-folders", help=EXCLUDE_FOLDERS_HELP),
) -> None:
    """List the bins of an archive: one line per bin with its ROI count and volume analysed (mL).

    Bins are found in flat folders or in day folders (D2024/D20240101/, 2012/IFCB5_2012_028/), or in a .zip of
    an archive; folders named bad, skip, beads, temp or data_temp are left out (--exclude-folders), and so are
    recycle bins, trash and hidden folders. A time window also reads the day folders either side of it (folders
    named by local date hold bins of the next or previous UTC day).

    A bin with a missing or unreadable file is listed as failed, with the reason; byte-identical copies of a bin
    are one bin, copies that differ a failure. The summary (on stderr) counts every file that looks like part of
    the archive but was left out, with the reason and examples.
    """
    options = parse_storage_options(storage_options)
    start_time, end_time = parse_window(start, end)
    counts = {"ok": 0, "beads": 0, "failed": 0, "rois": 0}
    try:
        results = scan_archive(
            archive_url, options, start=start_time, end=end_time, exclude=parse_folder_list(exclude_folders)
        )
        if not as_json:
            typer.echo(format_listing_header())
        for record in listing_records(results):
            counts[record["status"]] += 1
            counts["rois"] += record["rois"] or 0
            typer.echo(json.dumps(record) if as_json else format_listing_line(record))
    except (FileNotFoundError, IfcbFormatError, ValueError) as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(2) from None
    for line in results.left_out.lines():
        typer.echo(line, err=True)
    excluded = ", ".join(results.left_out.exclude) or "none"
    beads = f"{counts['beads']} bead runs (left out of classify: --include-beads), " if counts["beads"] else ""
    typer.echo(
        f"{counts['ok']} bins ok, {counts['failed']} failed, {beads}{counts['rois']} ROIs "
        f"(folders left out: {excluded}; recycle bins, trash and hidden folders)",
        err=True,
    )


def extract(
    bin_url: str = typer.Argument(
        ..., help="A bin: its path or URL without extension, or the path of its .hdr, .adc or .roi."
    ),
    out_dir: Path = typer.Argument(..., help="Local folder for the PNG files (created if needed)."),
    model_input: bool = typer.Option(
        False, "--model-input", help="Write what the model sees: each ROI preprocessed (default: the raw pixels)."
    ),
    model: str | None = typer.Option(
        None, "--model", help="With --model-input: the bundle whose preprocessing to apply (default: 128x128 contract)."
    ),
    storage_options: str | None = typer.Option(None, "--storage-options", help=STORAGE_OPTIONS_HELP),
) -> None:
    """Write every ROI image of one bin as a lossless 8-bit grayscale PNG named <roi id>.png (the raw pixels).

    With --model-input, write instead the image the model is fed (the bundle's preprocessing with --model): its
    grey levels before any scaling, the one grey a 3-channel model gets in each channel (rounded to 8 bits where
    the contract resizes in float32).
    """
    from model.bundle import BundleError
    from model.preprocess import preprocess

    options = parse_storage_options(storage_options)
    if model is not None and not model_input:
        raise typer.BadParameter("--model applies to --model-input only", param_hint="--model")
    try:
        config = _model_input_config(model, options) if model_input else None
        fs, files = bin_files_at(bin_url, options)
        if files.missing:
            raise IfcbFormatError(f"bin {files.bin.id} is incomplete: missing {' and '.join(files.missing)}")
        meta = read_bin_meta(fs, files)
        images = read_bin_images(fs, meta)
    except (FileNotFoundError, IfcbFormatError, BundleError) as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(2) from None
    for warning in meta.warnings:
        typer.echo(f"warning: {files.bin.id}: {warning}", err=True)
    out_dir.mkdir(parents=True, exist_ok=True)
    with Progress(transient=True) as progress:
        task = progress.add_task(f"extracting {files.bin.id}", total=len(images))
        for number, image in images:
            pixels = image if config is None else _grey(preprocess(image, config)[:, :, 0])
            Image.fromarray(pixels).save(out_dir / f"{roi_id(files.bin.id, number)}.png")
            progress.advance(task)
    what = "raw" if config is None else f"model-input {config.size}x{config.size}"
    typer.echo(f"wrote {len(images)} {what} PNG files to {out_dir}")


def _grey(pixels: np.ndarray) -> np.ndarray:
    """A pixel stage as 8-bit grey levels (a float32 contract's fractions rounded)."""
    return pixels if pixels.dtype == np.uint8 else np.clip(np.rint(pixels), 0, 255).astype(np.uint8)


def _model_input_config(bundle_url: str | None, storage_options: dict[str, Any]) -> PreprocessConfig:
    """The bundle's `PreprocessConfig`, read from its small metadata (no TensorFlow), or the default contract."""
    from model.bundle import BundleError, read_bundle_info
    from model.preprocess import PreprocessConfig

    if bundle_url is None:
        return PreprocessConfig()
    try:
        return PreprocessConfig.from_dict(read_bundle_info(bundle_url, storage_options)["preprocess"])
    except (TypeError, ValueError) as err:
        raise BundleError(f"{bundle_url}: bad preprocessing parameters: {err}") from None


def synth(
    out_url: str = typer.Argument(..., help="Folder (local path or URL) to write the synthetic archive into."),
    bins: int = typer.Option(10, "--bins", min=0, help="Number of bins (20 minutes apart)."),
    rois: int = typer.Option(100, "--rois", min=0, help="ROIs with an image per bin."),
    classes: int = typer.Option(
        4, "--classes", min=1, max=len(SYNTH_CLASSES), help=f"Shape kinds used, first K of: {', '.join(SYNTH_CLASSES)}."
    ),
    seed: int = typer.Option(0, "--seed", help="Random seed: the same seed writes the same bytes."),
    flat: bool = typer.Option(False, "--flat", help="All bins in one folder instead of DYYYY/DYYYYMMDD/ folders."),
    storage_options: str | None = typer.Option(None, "--storage-options", help=STORAGE_OPTIONS_HELP),
) -> None:
    """Write a synthetic archive of valid bins of plankton-like shapes, with the true classes in labels.csv."""
    options = parse_storage_options(storage_options)
    ids = write_synthetic_archive(
        out_url, bins=bins, rois=rois, classes=classes, seed=seed, storage_options=options, flat=flat
    )
    typer.echo(f"wrote {len(ids)} bins x {rois} ROIs ({classes} classes) and labels.csv to {out_url}")
