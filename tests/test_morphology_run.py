"""`classify --morphology` through the CLI on the shared real bins (new-style and stitched old-style): each ROI is
measured in the same pass as it is classified, the store keeps the features per ROI and each bin's biovolume and
carbon per class, the CSV and the report carry them per mL, and the store keeps its calibration and table for every
later run.

The expected values are computed here from the images as `pipeline.ifcb` reads them and, for carbon, by hand from
Menden-Deuer & Lessard (2000) as WHOI's ifcb-analysis applies it (`biovol2carbon.m`: protists and small diatoms
log10 C = -0.665 + 0.939 log10 V, diatoms of 3000 µm³ and more -0.933 + 0.881 log10 V)."""

from __future__ import annotations

import csv
import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import fsspec
import numpy as np
import pytest
from onnx_support import onnx_bundle
from seabass_support import check_published_rules

from model.decision import winners
from pipeline.ifcb.bins import BinFiles, read_bin_images, read_bin_meta
from pipeline.ifcb.identifiers import parse_bin_id
from pipeline.morphology import COLUMNS, as_matrix, morphology_table
from pipeline.results.layout import UNMEASURED
from pipeline.results.store import ResultStore

IFCBFLOW = str(Path(sys.executable).with_name("ifcbflow"))
CLASSES = ["round", "long", "spiky"]
BINS = {"D20130526T095207_IFCB013": 2.77, "IFCB5_2012_028_081515": 3.4}  # bin -> the calibration the run gives it
TAXA = "class,scientificName,aphia_id,diatom\nround,Bacillariophyceae,148899,true\nlong,Dinophyceae,19542,false\n" \
    "spiky,Ciliophora,11,false\n"  # fmt: skip
DIATOMS = np.array([True, False, False])


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> str:
    return onnx_bundle(tmp_path_factory.mktemp("bundle"), CLASSES)


def _ifcbflow(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([IFCBFLOW, *args], capture_output=True, text=True, timeout=600)


def _copy_bin(source: Path, name: str, target: Path, as_name: str | None = None) -> None:
    for ext in ("hdr", "adc", "roi"):
        shutil.copy(source / f"{name}.{ext}", target / f"{as_name or name}.{ext}")


def _measured(folder: Path, name: str) -> np.ndarray:
    """The morphology of the bin's ROIs as read here (float32 (roi, feature), pixels)."""
    fs = fsspec.filesystem("file")
    files = BinFiles(parse_bin_id(name), *(str(folder / f"{name}.{ext}") for ext in ("hdr", "adc", "roi")))
    return as_matrix(morphology_table(image for _, image in read_bin_images(fs, read_bin_meta(fs, files))))


def _carbon_by_hand(volume_um3: float, diatom: bool) -> float:
    if volume_um3 <= 0:
        return 0.0
    if diatom and volume_um3 >= 3000:
        return 10 ** (-0.933 + 0.881 * math.log10(volume_um3))
    return 10 ** (-0.665 + 0.939 * math.log10(volume_um3))


def test_classify_with_morphology_keeps_features_per_roi_and_biovolume_and_carbon_per_class(
    ifcb_data: Path, bundle: str, tmp_path: Path
) -> None:
    archive, out = tmp_path / "archive", tmp_path / "store.zarr"
    archive.mkdir()
    for name in BINS:
        _copy_bin(ifcb_data / "bins", name, archive)
    (tmp_path / "taxa.csv").write_text(TAXA)
    run = _ifcbflow("classify", str(archive), "--model", bundle, "--out", str(out), "--workers", "1", "--json",
                    "--morphology", "--pixels-per-micron", "IFCB13=2.77,*=3.4", "--taxa", str(tmp_path / "taxa.csv"))
    assert run.returncode == 0, run.stderr[-3000:]
    assert json.loads(run.stdout)["bins_done"] == 2

    store = ResultStore(str(out))
    kept = store.info()["morphology"]
    assert kept["pixels_per_micron"] == {"13": 2.77, "*": 3.4} and kept["diatoms"] == [True, False, False]
    ledger = store.ledger()
    hand: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for name, scale in BINS.items():
        record = ledger.bins[name]
        rows = slice(record.roi_offset, record.roi_offset + record.n_rois)
        stored = store.read_morphology(record.part)[rows]
        expected = _measured(ifcb_data / "bins", name)
        assert stored.shape == (record.n_rois, len(COLUMNS)) and record.n_rois > 0
        np.testing.assert_allclose(stored, expected, rtol=1e-6)  # the same features, measured in the run's feeders
        _, scores = store.read_bin(name, ledger)
        won = winners(scores)
        volume = expected[:, COLUMNS.index("summedBiovolume")].astype(np.float64) / scale**3
        biovolume = np.array([volume[won == c].sum() for c in range(len(CLASSES))])
        carbon = np.array([sum(_carbon_by_hand(v, DIATOMS[c]) for v in volume[won == c]) for c in range(len(CLASSES))])
        np.testing.assert_allclose(record.biovolume, biovolume, rtol=1e-5)
        np.testing.assert_allclose(record.carbon, carbon, rtol=1e-5)
        hand[name] = (biovolume, carbon)
    assert sum(hand[name][0].sum() for name in BINS) > 0, "the real bins hold ROIs with a volume"

    table = tmp_path / "bins.csv"
    exported = _ifcbflow("export", str(out), "--csv", str(table))
    assert exported.returncode == 0, exported.stderr[-3000:]
    rows = {row["bin"]: row for row in csv.DictReader(table.open())}
    for name, (biovolume, carbon) in hand.items():
        volume_ml = float(rows[name]["ml_analyzed"])
        for c, label in enumerate(CLASSES):
            assert float(rows[name][f"{label}_biovolume_um3_per_ml"]) == pytest.approx(biovolume[c] / volume_ml)
            # pg per mL to µg per L: / 1000
            assert float(rows[name][f"{label}_carbon_ug_per_l"]) == pytest.approx(carbon[c] / volume_ml / 1000)
    report = _ifcbflow("report", str(out), "--json")
    assert report.returncode == 0, report.stderr[-3000:]
    totals = json.loads(report.stdout)
    assert totals["bins_measured"] == 2 and set(totals["mean_carbon_ug_per_l"]) == set(CLASSES)

    other = _ifcbflow("classify", str(archive), "--model", bundle, "--out", str(out), "--pixels-per-micron", "3")
    assert other.returncode == 2 and "measures its bins with" in other.stderr  # a store measures every bin alike

    _copy_bin(ifcb_data / "bins", "D20130526T095207_IFCB013", archive, "D20130526T115207_IFCB013")
    later = _ifcbflow("classify", str(archive), "--model", bundle, "--out", str(out), "--json")  # no flags
    assert later.returncode == 0, later.stderr[-3000:]
    record = ResultStore(str(out)).ledger().bins["D20130526T115207_IFCB013"]
    np.testing.assert_allclose(record.biovolume, hand["D20130526T095207_IFCB013"][0], rtol=1e-5)  # the same files

    _check_seabass_export(out, tmp_path, ifcb_data)

    before = {name: _stored(out, name) for name in (*BINS, "D20130526T115207_IFCB013")}
    compacted = _ifcbflow("compact", str(out), "--target-rois", "1000")
    assert compacted.returncode == 0, compacted.stderr[-3000:]
    after = {name: _stored(out, name) for name in before}
    assert len({part for part, _, _ in after.values()}) < len({part for part, _, _ in before.values()})  # merged
    for name, (_, features, biovolume) in before.items():
        np.testing.assert_array_equal(after[name][1], features)  # copied bit for bit
        assert after[name][2] == biovolume


def test_a_run_that_measures_measures_the_bins_classified_before_and_then_reads_no_record(
    ifcb_data: Path, bundle: str, tmp_path: Path
) -> None:
    """Bins classified without --morphology are measured by the first runs that ask for it (each bin once, those
    it selects), with the scores they had; once every bin is measured, planning reads no bin record again."""
    archive, out = tmp_path / "archive", tmp_path / "store.zarr"
    archive.mkdir()
    for name in BINS:
        _copy_bin(ifcb_data / "bins", name, archive)
    new_style, old_style = BINS
    plain = _ifcbflow("classify", str(archive), "--model", bundle, "--out", str(out), "--workers", "1", "--json")
    assert plain.returncode == 0, plain.stderr[-3000:]
    store = ResultStore(str(out))
    before = {name: store.read_bin(name, store.ledger()) for name in BINS}
    assert all(record.biovolume is None for record in store.ledger().bins.values())
    assert store.ledger().summary_attributes[UNMEASURED] == 2

    measure = ("classify", str(archive), "--model", bundle, "--out", str(out), "--workers", "1", "--json",
               "--morphology", "--pixels-per-micron", "IFCB13=2.77,*=3.4")  # fmt: skip
    one = _ifcbflow(*measure, "--bins", old_style)
    assert one.returncode == 0, one.stderr[-3000:]
    summary = json.loads(one.stdout)
    assert (summary["bins_measured_now"], summary["bins_done"], summary["bins_already_complete"]) == (1, 1, 0)
    ledger = ResultStore(str(out)).ledger()
    assert ledger.bins[new_style].biovolume is None and ledger.bins[old_style].biovolume is not None
    assert ledger.summary_attributes[UNMEASURED] == 1

    rest = _ifcbflow(*measure)
    assert rest.returncode == 0, rest.stderr[-3000:]
    summary = json.loads(rest.stdout)
    assert (summary["bins_measured_now"], summary["bins_done"], summary["bins_already_complete"]) == (1, 1, 1)
    store = ResultStore(str(out))
    ledger = store.ledger()
    assert ledger.summary_attributes[UNMEASURED] == 0
    for name, scale in BINS.items():
        record = ledger.bins[name]
        numbers, scores = store.read_bin(name, ledger)
        np.testing.assert_array_equal(numbers, before[name][0])
        np.testing.assert_allclose(scores, before[name][1], atol=1e-6)  # the same model on the same images
        rows = slice(record.roi_offset, record.roi_offset + record.n_rois)
        expected = _measured(ifcb_data / "bins", name)
        np.testing.assert_allclose(store.read_morphology(record.part)[rows], expected, rtol=1e-6)
        volume = expected[:, COLUMNS.index("summedBiovolume")].astype(np.float64) / scale**3
        won = winners(scores)
        np.testing.assert_allclose(record.biovolume, [volume[won == c].sum() for c in range(len(CLASSES))], rtol=1e-5)
    report = _ifcbflow("report", str(out), "--json")
    assert report.returncode == 0 and json.loads(report.stdout)["bins_measured"] == 2, report.stderr[-3000:]

    planning = ResultStore(str(out)).ledger()
    assert planning.unmeasured() == set() and not planning.loaded_records  # the summary said: none to find
    again = _ifcbflow(*measure)
    assert again.returncode == 0, again.stderr[-3000:]
    summary = json.loads(again.stdout)
    assert (summary["bins_measured_now"], summary["bins_planned"], summary["bins_already_complete"]) == (0, 0, 2)

    head = out / "summary" / "zarr.json"  # a summary of before the count: the next measuring run writes it, once
    document = json.loads(head.read_text())
    del document["attributes"][UNMEASURED]
    head.write_text(json.dumps(document))
    assert not ResultStore(str(out)).ledger().counts_unmeasured
    counted = _ifcbflow(*measure)
    assert counted.returncode == 0 and json.loads(counted.stdout)["bins_planned"] == 0, counted.stderr[-3000:]
    assert ResultStore(str(out)).ledger().summary_attributes[UNMEASURED] == 0


METADATA = """investigators: [Jane Doe]
affiliations: [Example Oceanographic Institution]
contact: jane.doe@example.org
experiment: EXAMPLE
cruise: EX2401
documents: [protocol.pdf]
data_type: flow_thru
data_status: preliminary
measurement_depth: 5
"""


def _check_seabass_export(out: Path, tmp_path: Path, ifcb_data: Path) -> None:
    """`export --seabass`: a file per bin whose headers and rows are checked one by one against the published rules
    and against the store: each ROI's class, taxon, score and sizes in µm by its instrument's calibration."""
    (tmp_path / "seabass.yaml").write_text(METADATA)
    folder = tmp_path / "seabass"
    run = _ifcbflow("export", str(out), "--seabass", str(folder), "--seabass-metadata", str(tmp_path / "seabass.yaml"),
                    "--taxa", str(tmp_path / "taxa.csv"))  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    files = sorted(folder.glob("*.sb"))
    assert len(files) == 3  # every complete bin
    store = ResultStore(str(out))
    ledger = store.ledger()
    taxa = {"round": ("Bacillariophyceae", "148899"), "long": ("Dinophyceae", "19542"), "spiky": ("Ciliophora", "11")}
    for path in files:
        headers, rows = check_published_rules(path.read_text(), path.name)
        name = headers["eventID"]
        scale = BINS.get(name, 2.77)
        record = ledger.bins[name]
        assert float(headers["pixel_per_um"]) == scale and headers["experiment"] == "EXAMPLE"
        assert float(headers["volume_imaged_ml"]) == pytest.approx(record.ml_analyzed, rel=1e-5)  # 6 digits
        fields = headers["fields"].split(",")
        numbers, scores = store.read_bin(name, ledger)
        expected = _measured(ifcb_data / "bins", name if name in BINS else "D20130526T095207_IFCB013")
        assert len(rows) == record.n_rois == len(numbers)
        for cells, number, roi_scores, features in zip(rows, numbers, scores, expected, strict=True):
            row = dict(zip(fields, cells, strict=True))
            label = CLASSES[int(np.argmax(roi_scores))]
            assert row["associatedMedia"] == f"{name}_{number:05d}"
            assert row["data_provider_category_automated"] == label
            assert row["scientificName_automated"] == taxa[label][0]
            assert row["scientificNameID_automated"] == f"urn:lsid:marinespecies.org:taxname:{taxa[label][1]}"
            assert float(row["prediction_score_automated_category"]) == pytest.approx(roi_scores.max(), abs=1e-3)
            volume = features[COLUMNS.index("Biovolume")] / scale**3
            assert float(row["biovolume"]) == pytest.approx(volume, abs=1e-3)
            assert float(row["area_cross_section"]) == pytest.approx(features[COLUMNS.index("Area")] / scale**2,
                                                                     abs=1e-3)  # fmt: skip
            assert float(row["length_representation"]) == pytest.approx(
                features[COLUMNS.index("MajorAxisLength")] / scale, abs=1e-3)  # fmt: skip
            assert float(row["width_representation"]) == pytest.approx(
                features[COLUMNS.index("MinorAxisLength")] / scale, abs=1e-3)  # fmt: skip
            assert float(row["equivalent_spherical_diameter"]) == pytest.approx((6 * volume / math.pi) ** (1 / 3),
                                                                                abs=1e-3)  # fmt: skip
    wrong = tmp_path / "wrong.yaml"
    wrong.write_text(METADATA + "pixel_per_um: 9\n")
    refused = _ifcbflow("export", str(out), "--seabass", str(tmp_path / "other"), "--seabass-metadata", str(wrong),
                        "--taxa", str(tmp_path / "taxa.csv"))  # fmt: skip
    assert refused.returncode == 2 and "pixel_per_um 9" in refused.stderr, refused.stderr[-2000:]


def _stored(out: Path, name: str) -> tuple[str, np.ndarray, list[float] | None]:
    """(partition, morphology rows, biovolume per class) of a bin in the store."""
    store = ResultStore(str(out))
    record = store.ledger().bins[name]
    rows = slice(record.roi_offset, record.roi_offset + record.n_rois)
    return record.part, store.read_morphology(record.part)[rows], record.biovolume


def test_a_calibration_or_taxon_table_that_cannot_be_read_is_refused_before_anything_is_written(
    ifcb_data: Path, bundle: str, tmp_path: Path
) -> None:
    archive = tmp_path / "archive"
    archive.mkdir()
    _copy_bin(ifcb_data / "bins", "D20130526T095207_IFCB013", archive)
    for flags, message in (
        (["--pixels-per-micron", "IFCB13=-2"], "pixels per micron must be a positive number"),
        (["--taxa", str(tmp_path / "missing.csv")], "missing.csv"),
    ):
        out = tmp_path / f"store-{len(message)}.zarr"
        run = _ifcbflow("classify", str(archive), "--model", bundle, "--out", str(out), *flags)
        assert run.returncode == 2 and message in run.stderr, run.stderr[-2000:]
        assert not out.exists()  # checked before the store is touched
    (tmp_path / "short.csv").write_text("class,scientificName,aphia_id,diatom\nround,Bacillariophyceae,148899,true\n")
    run = _ifcbflow("classify", str(archive), "--model", bundle, "--out", str(tmp_path / "s.zarr"), "--taxa",
                    str(tmp_path / "short.csv"))  # fmt: skip
    assert run.returncode == 2 and "long" in run.stderr, run.stderr[-2000:]  # the model's classes it lacks
