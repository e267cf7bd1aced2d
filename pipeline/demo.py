"""The demo: `python -m pipeline.demo --out DIR` runs the whole story on a small synthetic archive.

Each step is one call in `main()`, in the order a user would run the commands. A second model (another seed, fewer
epochs) is trained and classified too, so that the demo ends with what changes between two models.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import typer

from pipeline.cli.archive import format_listing_header, format_listing_line, listing_records
from pipeline.cli.logs import configure_logging
from pipeline.ifcb.archive import scan_archive
from pipeline.ifcb.synth import write_synthetic_archive

DEMO_BINS, DEMO_ROIS, DEMO_CLASSES, DEMO_SEED = 6, 60, 4, 0
#: Small enough for a few minutes on 2 CPU cores: the small CNN on 64x64 inputs, 2 replicas, a few epochs.
DEMO_ARCH, DEMO_SIZE, DEMO_EPOCHS, DEMO_REPLICAS, DEMO_WORKERS = "small-cnn", 64, 15, 2, 2
#: The second model, to compare with: another seed (split and initial weights) and fewer epochs.
SECOND_SEED, SECOND_EPOCHS = 1, 10


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


def train_model(out: Path, archive: str, name: str = "model", seed: int = 0, epochs: int = DEMO_EPOCHS) -> str:
    """Step 3: train the small CNN on the labelled synthetic ROIs with 2 replicas (`ifcbflow train`); the bundle
    gets per-class thresholds fitted on the validation split."""
    from model.preprocess import PreprocessConfig
    from model.training.prepared import prepare
    from model.training.train import train
    from pipeline.ifcb.labelled import labelled_archive_source

    source = labelled_archive_source(archive, f"{archive}/labels.csv")
    prepared = prepare(source, str(out / "prepared"), PreprocessConfig(size=DEMO_SIZE))  # the second model reuses it
    bundle_url = str(out / f"{name}.zip")
    bundle = train(
        prepared, arch=DEMO_ARCH, epochs=epochs, replicas=DEMO_REPLICAS, out_url=bundle_url, batch_size=16, seed=seed,
        verbose=2, patience=epochs,  # no early stop: BatchNorm makes the first epochs' validation loss noisy
    )  # fmt: skip
    test = (bundle.provenance.get("metrics") or {}).get("test") or {}
    typer.echo(f"trained {name} ({DEMO_ARCH}, seed {seed}, {epochs} epochs): held-out test accuracy "
               f"{test.get('accuracy', float('nan')):.3f}")
    if bundle.thresholds is not None:
        fit = bundle.provenance["thresholds"]
        rows = ", ".join(f"{c} {bundle.thresholds[c]:.2f} (F1 {fit['per_class'][c]['f1_argmax']:.2f} -> "
                         f"{fit['per_class'][c]['f1']:.2f})" for c in bundle.classes)
        typer.echo(f"thresholds fitted on the validation split: {rows}")
    return bundle_url


def classify(client: Any, archive: str, bundle_url: str, store_url: str) -> None:
    """Step 4: the main job on the embedded default, a 2-worker local Dask cluster (`ifcbflow classify`)."""
    from rich.console import Console

    from pipeline.cli.progress import JobProgress
    from pipeline.cli.tables import summary_table
    from pipeline.job.run import ClassifyRequest, run_classification

    console = Console()
    summary = run_classification(client, ClassifyRequest(archive, bundle_url, store_url), JobProgress(console))
    console.print(summary_table(summary.to_dict()))


def export_and_report(out: Path, store_url: str) -> None:
    """Step 5: Dashboard class files, the CSV table, the report and its plot (`ifcbflow export`, `report`), and the
    totals by argmax next to those by the model's thresholds."""
    from rich.console import Console
    from rich.table import Table

    from pipeline.cli.tables import report_tables
    from pipeline.results.export import export_csv, export_dashboard
    from pipeline.results.report import plot_concentrations, store_report
    from pipeline.results.store import ResultStore

    store = ResultStore(store_url)
    written = export_dashboard(store, str(out / "dashboard"))
    export_csv(store, str(out / "bins.csv"))
    plot_concentrations(store, str(out / "concentrations.png"))
    report = store_report(store)
    for table in report_tables(report, "thresholded" if report["counts_thresholded"] else "argmax"):
        Console().print(table)
    if report["counts_thresholded"]:
        totals = Table(title="ROIs per class: argmax and thresholded (`ifcbflow report --counts argmax|thresholded`)")
        for column in ("class", "argmax", "thresholded", "threshold"):
            totals.add_column(column, justify="left" if column == "class" else "right")
        for name in report["classes_thresholded"]:
            threshold = report["thresholds"].get(name)
            totals.add_row(name, str(report["counts"].get(name, "-")), str(report["counts_thresholded"][name]),
                           "-" if threshold is None else f"{threshold:.2f}")  # fmt: skip
        Console().print(totals)
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


def compare_models(out: Path, store_a: str, store_b: str) -> None:
    """Step 7: the two models' stores compared ROI by ROI (`ifcbflow compare`), each by its own thresholds."""
    from rich.console import Console

    from pipeline.cli.tables import comparison_tables
    from pipeline.results.compare import plot_confusion
    from pipeline.results.compare_stores import compare_stores
    from pipeline.results.store import ResultStore

    result = compare_stores(ResultStore(store_a), ResultStore(store_b), top_n=3)
    for table in comparison_tables(result.to_dict()):
        Console().print(table)
    plot_confusion(result.comparison, str(out / "compare.png"), label_a="model", label_b="model-b")
    typer.echo(f"confusion plot {out / 'compare.png'}")


def main(out: Path = typer.Option(..., "--out", help="Folder for everything the demo writes.")) -> None:
    """Run the whole story on a small synthetic archive: synth, ls, train two models, classify, export, report,
    accuracy, compare."""
    from pipeline.cluster.client import open_client

    configure_logging()
    archive = synthesize(out)
    list_archive(archive)
    bundle_url = train_model(out, archive)
    second_url = train_model(out, archive, "model-b", SECOND_SEED, SECOND_EPOCHS)
    store_url, second_store = str(out / "results.zarr"), str(out / "results-b.zarr")
    for store in (store_url, second_store):  # a demo run before this one wrote another model's results there
        shutil.rmtree(store, ignore_errors=True)
    with open_client("local", workers=DEMO_WORKERS) as client:  # one cluster for both runs
        classify(client, archive, bundle_url, store_url)
        classify(client, archive, second_url, second_store)
    export_and_report(out, store_url)
    accuracy(archive, store_url)
    compare_models(out, store_url, second_store)


if __name__ == "__main__":
    typer.run(main)
