"""Helpers for the model and classify-job tests: random weights, a quick deterministic bundle, a single-process
reference, store snapshots, a classify run through the CLI."""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import psutil

from pipeline.ifcb.archive import list_bins
from pipeline.ifcb.bins import read_bin_images, read_bin_meta
from pipeline.ifcb.synth import SYNTH_CLASSES, write_synthetic_archive

CLASSES = SYNTH_CLASSES[:3]
IMAGE_SIZE = 32


def random_weight(name: str, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """A float32 weight that keeps activations in range: He-scaled kernels, BatchNorm scales near 1, small rest."""
    if name == "kernel":
        array = rng.normal(0, np.sqrt(2 / np.prod(shape[:-1])), shape)
    elif name in ("gamma", "moving_variance"):
        array = rng.uniform(0.5, 1.5, shape)
    else:
        array = rng.normal(0, 0.1, shape)
    return array.astype(np.float32)


def make_bundle(url: str, storage_options: dict[str, Any] | None = None, *, seed: int = 0) -> str:
    """An untrained small CNN saved as a bundle (no training: equality tests need only a fixed model)."""
    import keras

    from model.architectures import build
    from model.bundle import Bundle, save_bundle
    from model.preprocess import PreprocessConfig

    keras.utils.set_random_seed(seed)
    model = build("small-cnn", len(CLASSES), IMAGE_SIZE)
    bundle = Bundle(model=model, classes=list(CLASSES), preprocess=PreprocessConfig(size=IMAGE_SIZE), arch="small-cnn")
    return save_bundle(bundle, url, storage_options)


def reference_scores(
    archive_url: str, bundle_url: str, storage_options: dict[str, Any] | None = None
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """What the job must produce, computed in this process: (ROI numbers, scores) per readable bin."""
    from model.inference.load import load_bundle
    from model.inference.predictors import predict

    bundle = load_bundle(bundle_url, storage_options)
    fs, bins, _ = list_bins(archive_url, storage_options)
    out = {}
    for files in bins:
        try:
            images = read_bin_images(fs, read_bin_meta(fs, files))
        except ValueError:
            continue
        numbers = np.array([n for n, _ in images], dtype=np.int64)
        out[files.bin.id] = (numbers, predict(bundle, [image for _, image in images]))
    return out


def tree_digests(root: Path) -> dict[str, str]:
    """sha256 of every file under `root`, by relative path: byte-level equality of two stores' bins."""
    return {
        str(path.relative_to(root)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


def tree_mtimes(root: Path) -> dict[str, int]:
    """Modification times (ns) of every file under `root`: a rewritten file shows a new time."""
    return {str(path.relative_to(root)): path.stat().st_mtime_ns for path in root.rglob("*") if path.is_file()}


def session_survivors(session: int, grace_s: float = 10.0) -> list[psutil.Process]:
    """Processes of the session that a CLI run led, still alive `grace_s` after it returned (a resource tracker
    ends by itself when its owner's pipe closes, a few milliseconds after its owner: nobody waits for it)."""
    deadline = time.monotonic() + grace_s
    while True:
        alive = []
        for process in psutil.process_iter():
            try:
                if os.getsid(process.pid) == session and process.status() != psutil.STATUS_ZOMBIE:
                    alive.append(process)
            except (ProcessLookupError, psutil.NoSuchProcess, PermissionError):
                continue
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(0.05)


def classify_json(archive: Path, bundle: str, store: Path, scheduler: str, *extra: str) -> tuple[int, dict[str, Any]]:
    """`ifcbflow classify ARCHIVE --model BUNDLE --out STORE --json --cluster SCHEDULER [extra]` through the CLI:
    (its exit code, its run summary)."""
    from typer.testing import CliRunner

    from pipeline.cli.app import app

    args = ["classify", str(archive), "--model", bundle, "--out", str(store), "--json", "--cluster", scheduler, *extra]
    result = CliRunner().invoke(app, args)
    return result.exit_code, json.loads(result.stdout)


#: The archive of the fault tests on object storage (`clean_fault_run`): small, several partitions.
FAULT_BINS, FAULT_ROIS = 6, 8


def clean_fault_run(client: Any, root: str, options: dict[str, Any]) -> dict[str, str]:
    """An archive, a bundle and the store of a run without faults under `root` (an `s3://bucket` or `az://container`
    URL): what a run through faults must equal (`assert_like_clean_run`)."""
    from pipeline.job.run import ClassifyRequest, run_classification

    archive, bundle, store = f"{root}/archive", f"{root}/bundle.zip", f"{root}/clean.zarr"
    write_synthetic_archive(archive, bins=FAULT_BINS, rois=FAULT_ROIS, classes=len(CLASSES), seed=9,
                            storage_options=options)  # fmt: skip
    make_bundle(bundle, options)
    summary = run_classification(client, ClassifyRequest(archive, bundle, store, options, partition_mb=0.01))
    assert summary.complete and summary.bins_done == FAULT_BINS
    return {"archive": archive, "bundle": bundle, "store": store}


def assert_like_clean_run(summary: Any, store_url: str, clean: dict[str, str], options: dict[str, Any]) -> None:
    """A run through faults (its `summary`, its store) completed every bin, with the ROIs, scores and summary of the
    clean run (`clean_fault_run`) but for where the bins' partitions are."""
    from pipeline.results.store import ResultStore

    assert summary.complete and summary.bins_done == FAULT_BINS and summary.bins_incomplete == 0
    got, want = _store_results(store_url, options), _store_results(clean["store"], options)
    assert sorted(got) == sorted(want)
    for bin_id, (numbers, scores) in want.items():
        assert got[bin_id][0] == numbers
        np.testing.assert_array_equal(got[bin_id][1], scores)
    summary_a = ResultStore(store_url, options).summary().drop_vars(["part", "roi_offset"])
    summary_b = ResultStore(clean["store"], options).summary().drop_vars(["part", "roi_offset"])
    assert summary_a.equals(summary_b)


def _store_results(url: str, options: dict[str, Any]) -> dict[str, tuple[list[int], np.ndarray]]:
    from pipeline.results.store import ResultStore

    return {record.bin: (numbers.tolist(), scores) for record, numbers, scores in ResultStore(url, options).iter_bins()}
