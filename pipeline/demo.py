"""The demo: `python -m pipeline.demo --out DIR` runs the whole story on a small synthetic archive.

Each step is one call in `main()`, in the order a user would run the commands.
"""

from __future__ import annotations

from pathlib import Path

import typer

from pipeline.cli.archive import format_listing_header, format_listing_line, listing_records
from pipeline.cli.logs import configure_logging
from pipeline.ifcb.archive import scan_archive
from pipeline.ifcb.synth import write_synthetic_archive

DEMO_BINS, DEMO_ROIS, DEMO_CLASSES, DEMO_SEED = 6, 60, 4, 0
#: Small enough for a few minutes on 2 CPU cores: the small CNN on 64x64 inputs, 2 replicas, a few epochs.
DEMO_ARCH, DEMO_SIZE, DEMO_EPOCHS, DEMO_REPLICAS, DEMO_WORKERS = "small-cnn", 64, 15, 2, 2


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


def train_model(out: Path, archive: str) -> str:
    """Step 3: train the small CNN on the labelled synthetic ROIs with 2 replicas (`ifcbflow train`)."""
    from model.preprocess import PreprocessConfig
    from model.train import train
    from pipeline.ifcb.labelled import labelled_images_from_archive

    data = labelled_images_from_archive(archive, f"{archive}/labels.csv")
    bundle_url = str(out / "model.zip")
    bundle = train(
        data, arch=DEMO_ARCH, epochs=DEMO_EPOCHS, replicas=DEMO_REPLICAS, out_url=bundle_url, batch_size=16,
        preprocess_config=PreprocessConfig(size=DEMO_SIZE), data_source=archive, verbose=2,
        patience=DEMO_EPOCHS,  # no early stop: BatchNorm makes the first epochs' validation loss noisy
    )  # fmt: skip
    test = (bundle.provenance.get("metrics") or {}).get("test") or {}
    typer.echo(f"trained {DEMO_ARCH}: held-out test accuracy {test.get('accuracy', float('nan')):.3f}")
    return bundle_url


def classify(archive: str, bundle_url: str, store_url: str) -> None:
    """Step 4: the main job on the embedded default, a 2-worker local Dask cluster (`ifcbflow classify`)."""
    from rich.console import Console

    from pipeline.cli.progress import JobProgress
    from pipeline.cli.tables import summary_table
    from pipeline.cluster.client import open_client
    from pipeline.job.run import ClassifyRequest, run_classification

    console = Console()
    with open_client("local", workers=DEMO_WORKERS) as client:
        summary = run_classification(client, ClassifyRequest(archive, bundle_url, store_url), JobProgress(console))
    console.print(summary_table(summary.to_dict()))


def export_and_report(out: Path, store_url: str) -> None:
    """Step 5: Dashboard class files, the CSV table, the report and its plot (`ifcbflow export`, `report`)."""
    from rich.console import Console

    from pipeline.cli.tables import report_tables
    from pipeline.results.export import export_csv, export_dashboard
    from pipeline.results.report import plot_concentrations, store_report
    from pipeline.results.store import ResultStore

    store = ResultStore(store_url)
    written = export_dashboard(store, str(out / "dashboard"))
    export_csv(store, str(out / "bins.csv"))
    plot_concentrations(store, str(out / "concentrations.png"))
    for table in report_tables(store_report(store)):
        Console().print(table)
    typer.echo(f"{len(written)} Dashboard files in {out / 'dashboard'}; table {out / 'bins.csv'}; "
               f"plot {out / 'concentrations.png'}")


def accuracy(archive: str, store_url: str) -> float:
    """Step 6: the classification against the synthetic truth (labels.csv), all bins and the held-out ones."""
    from model.bundle import read_bundle_info
    from model.decision import winners
    from pipeline.ifcb.labelled import read_labels_csv
    from pipeline.results.store import ResultStore

    store = ResultStore(store_url)
    info = store.info() or {}
    classes = info["classes"]
    truth = read_labels_csv(f"{archive}/labels.csv")
    held_out = set(read_bundle_info(info["bundle_url"])["provenance"].get("split", {}).get("test_groups", []))
    right = total = right_held = total_held = 0
    for record, numbers, scores in store.iter_bins():
        bin_id = record.bin
        for number, winner in zip(numbers.tolist(), winners(scores).tolist(), strict=True):
            ok = classes[winner] == truth[bin_id][number]
            right, total = right + ok, total + 1
            if bin_id in held_out:
                right_held, total_held = right_held + ok, total_held + 1
    overall = right / total if total else float("nan")
    typer.echo(f"accuracy against labels.csv: {overall:.3f} over {total} ROIs"
               + (f"; {right_held / total_held:.3f} on the {total_held} ROIs of held-out bins" if total_held else ""))
    return overall


def main(out: Path = typer.Option(..., "--out", help="Folder for everything the demo writes.")) -> None:
    """Run the whole story on a small synthetic archive: synth, ls, train, classify, export, report, accuracy."""
    configure_logging()
    archive = synthesize(out)
    list_archive(archive)
    bundle_url = train_model(out, archive)
    store_url = str(out / "results.zarr")
    classify(archive, bundle_url, store_url)
    export_and_report(out, store_url)
    accuracy(archive, store_url)


if __name__ == "__main__":
    typer.run(main)
