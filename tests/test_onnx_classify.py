"""An ONNX model over an archive on a LocalCluster of 2 worker processes, with embeddings: the store's scores and
features equal the model run directly on the same inputs, and they read lazily with `open_rois`."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from onnx_support import features_of, onnx_classifier, run_directly

from model.bundle import save_bundle
from model.convert.from_onnx import import_onnx
from model.preprocess import model_input, preprocess_batch, preset
from pipeline.ifcb.archive import list_bins
from pipeline.ifcb.bins import read_bin_images, read_bin_meta
from pipeline.ifcb.synth import write_synthetic_archive
from pipeline.job.run import ClassifyRequest, run_classification
from pipeline.results.rois import open_rois
from pipeline.results.store import StoreMismatchError

pytestmark = pytest.mark.slow
CLASSES = ["round", "long", "spiky"]


def test_classify_with_embeddings_equals_the_model_run_directly(tmp_path: Path, dask_client) -> None:
    archive, model, bundle_url, store = (str(tmp_path / name) for name in ("archive", "m.onnx", "b.zip", "s.zarr"))
    write_synthetic_archive(archive, bins=12, rois=30, classes=3, seed=5)
    weights = onnx_classifier(Path(model), size=32, features=8)
    bundle = import_onnx(model, CLASSES, preprocess_config=preset("smhi"))
    save_bundle(bundle, bundle_url)
    request = ClassifyRequest(archive, bundle_url, store, batch_size=16, embeddings=True)  # bins across batches
    summary = run_classification(dask_client, request)
    assert summary.complete and summary.rois == 360 and 2 <= summary.partitions < 12  # bins share partitions

    rois = open_rois(store)
    assert rois.scores.dims == ("roi", "class") and rois.embeddings.dims == ("roi", "feature")
    assert rois.embeddings.dtype == np.float16 and rois.embeddings.shape == (360, 8)
    fs, bins, _ = list_bins(archive)
    for files in bins:
        images = read_bin_images(fs, read_bin_meta(fs, files))
        inputs = model_input(preprocess_batch([image for _, image in images], bundle.preprocess), bundle.preprocess)
        mine = rois.isel(roi=(rois.bin == files.bin.id).values)
        assert mine.roi_number.values.tolist() == [number for number, _ in images]
        np.testing.assert_allclose(mine.scores.values, run_directly(Path(model), inputs), rtol=1e-5, atol=1e-6)
        expected = features_of(inputs, weights).astype(np.float16)
        np.testing.assert_allclose(mine.embeddings.values.astype(np.float32), expected, rtol=2e-3, atol=1e-3)

    with pytest.raises(StoreMismatchError, match="holds embeddings: rerun with --embeddings"):
        run_classification(dask_client, ClassifyRequest(archive, bundle_url, store))
