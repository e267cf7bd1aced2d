"""Side by side: ifcbflow's morphology (`pipeline.morphology`) and the IFCB Dashboard's v4 feature extractor
(WHOIGit/ifcb-features) on the same real ROIs, in ROIs per second per core, and how close their values come.

The ROIs: every ROI of the shared real bins as ifcbflow reads them (`pipeline.ifcb.bins.read_bin_images`: the
newer bin `D20130526T095207_IFCB013` and the older `IFCB5_2012_028_081515`, its pairs stitched), plus the real
labelled ROIs of `../shared/data/utopia/labelled` (RGB PNGs of grey images: channel 0), where present. Both sides
get the same uint8 arrays (written once to an `.npz`).

The reference runs in its own Python (`--reference-python`, e.g. a venv with numpy, scipy, scikit-image 0.24,
pandas, pyfftw and WHOIGit/phasepack 1.6.1) from a checkout of ifcb-features (`--reference-source DIR`, put on
PYTHONPATH): this script runs itself there with `--child`, which imports only numpy and `ifcb_features`. Both
sides run one process on one thread (OMP/BLAS/FFTW threads 1); "per core" = ROIs / CPU seconds of the timed loop
(process time), after one warm-up pass. Two reference timings: the Dashboard's whole v4 row
(`compute_features`: these features and convex, Feret, orientation, extent) and only the features this project
computes (`RoiFeatures` attributes).

    .venv/bin/python bench/bench_morphology.py --reference-python /tmp/reffeat/bin/python \\
        --reference-source /tmp/ifcbfeat-src
    .venv/bin/python bench/bench_morphology.py ... --repeats 5
    .venv/bin/python bench/bench_morphology.py ... --record tests/morphology_reference/reference_v4.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared" / "data"
BINS = {"new": "D20130526T095207_IFCB013", "old": "IFCB5_2012_028_081515"}
#: What the reference JSON records per ROI (the v4 names; `pipeline.morphology.features.COLUMNS`).
COLUMNS = (
    "Area", "Biovolume", "ConvexArea", "ConvexPerimeter", "Eccentricity", "EquivDiameter", "MajorAxisLength",
    "MinorAxisLength", "Perimeter", "RepresentativeWidth", "SurfaceArea", "numBlobs", "summedArea",
    "summedBiovolume", "summedConvexArea", "summedConvexPerimeter", "summedMajorAxisLength",
    "summedMinorAxisLength", "summedPerimeter", "summedSurfaceArea",
)  # fmt: skip
ONE_THREAD = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYFFTW_NUM_THREADS": "1"}


# ---------------------------------------------------------------- the reference side (runs in its own Python)
def _reference_row(image: np.ndarray) -> dict[str, float]:
    from ifcb_features.all import RoiFeatures  # the reference's own module, on PYTHONPATH

    r = RoiFeatures(image)
    b = r.blobs[0] if r.num_blobs else None
    row = {}
    for name, attr in (
        ("Area", "area"), ("Biovolume", "biovolume"), ("ConvexArea", "convex_area"),
        ("ConvexPerimeter", "convex_perimeter"), ("Eccentricity", "eccentricity"),
        ("EquivDiameter", "equiv_diameter"), ("MajorAxisLength", "major_axis_length"),
        ("MinorAxisLength", "minor_axis_length"), ("Perimeter", "perimeter"),
        ("RepresentativeWidth", "representative_width"), ("SurfaceArea", "surface_area"),
    ):  # fmt: skip
        row[name] = float(getattr(b, attr)) if b is not None else 0.0
    row["numBlobs"] = r.num_blobs
    for name, attr in (
        ("summedArea", "area"), ("summedBiovolume", "biovolume"), ("summedConvexArea", "convex_area"),
        ("summedConvexPerimeter", "convex_perimeter"), ("summedMajorAxisLength", "major_axis_length"),
        ("summedMinorAxisLength", "minor_axis_length"), ("summedPerimeter", "perimeter"),
        ("summedSurfaceArea", "surface_area"),
    ):  # fmt: skip
        row[name] = r.summed_attr(attr)
    return row


def child(npz: str, out: str, repeats: int) -> None:
    """Reference values and timings for every image of `npz`, written as JSON to `out`."""
    import warnings

    warnings.filterwarnings("ignore")
    np.seterr(all="ignore")
    from ifcb_features.all import compute_features

    data = np.load(npz)
    names = list(data.files)
    images = [data[k] for k in names]
    rows = {k: _reference_row(image) for k, image in zip(names, images, strict=True)}  # also the warm-up pass
    timings = {}
    for label, fn in (("subset", _reference_row), ("v4_row", compute_features)):
        best = []
        for _ in range(repeats):
            start = time.process_time()
            for image in images:
                fn(image)
            best.append(time.process_time() - start)
        timings[label] = min(best)
    Path(out).write_text(json.dumps({"rows": rows, "cpu_s": timings}))


# ---------------------------------------------------------------- the project side
def collect_rois() -> dict[str, tuple[str, np.ndarray]]:
    """{ROI id: (set, uint8 image)}: sets "new", "old" (the real bins) and "labelled" (utopia PNGs)."""
    import cv2
    import fsspec

    from pipeline.ifcb.bins import BinFiles, read_bin_images, read_bin_meta
    from pipeline.ifcb.identifiers import parse_bin_id

    rois: dict[str, tuple[str, np.ndarray]] = {}
    folder = SHARED / "ifcb" / "bins"
    fs = fsspec.filesystem("file")
    for kind, name in BINS.items():
        files = BinFiles(parse_bin_id(name), *(str(folder / f"{name}.{ext}") for ext in ("hdr", "adc", "roi")))
        for number, image in read_bin_images(fs, read_bin_meta(fs, files)):
            rois[f"{name}_{number:05d}"] = (kind, np.ascontiguousarray(image))
    labelled = SHARED / "utopia" / "labelled"
    for path in sorted(labelled.glob("*/*.png")):
        pixels = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        image = pixels if pixels.ndim == 2 else pixels[..., 0]
        rois[f"labelled/{path.parent.name}/{path.name}"] = ("labelled", np.ascontiguousarray(image))
    return rois


def relative_difference(ours: float, ref: float) -> float:
    """|ours - ref| / |ref|; 0 when both are 0, inf when only the reference is 0."""
    if ours == ref:
        return 0.0
    return abs(ours - ref) / abs(ref) if ref != 0 else float("inf")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reference-python", required=False, help="Python with the reference's dependencies")
    parser.add_argument("--reference-source", help="checkout of WHOIGit/ifcb-features (put on PYTHONPATH)")
    parser.add_argument("--repeats", type=int, default=3, help="timed passes per side; the fastest counts")
    parser.add_argument("--record", type=Path, help="write the reference's values as JSON to this file")
    parser.add_argument("--child", nargs=2, metavar=("NPZ", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child, repeats=args.repeats)
        return
    if not args.reference_python or not args.reference_source:
        parser.error("--reference-python and --reference-source are required")
    sys.path.insert(0, str(REPO))
    from pipeline.morphology.features import roi_morphology

    rois = collect_rois()
    names = list(rois)
    images = [rois[k][1] for k in names]
    with tempfile.TemporaryDirectory() as tmp:
        npz, out = Path(tmp, "rois.npz"), Path(tmp, "ref.json")
        np.savez(npz, **{k: im for k, im in zip(names, images, strict=True)})
        env = {**os.environ, **ONE_THREAD, "PYTHONPATH": str(Path(args.reference_source).resolve())}
        subprocess.run(
            [args.reference_python, str(Path(__file__).resolve()), "--child", str(npz), str(out),
             "--repeats", str(args.repeats)],
            check=True, env=env, cwd=tmp,
        )  # fmt: skip
        reference = json.loads(out.read_text())
    ours = {k: roi_morphology(im) for k, im in zip(names, images, strict=True)}  # warm-up pass
    passes = []
    for _ in range(args.repeats):
        start = time.process_time()
        for image in images:
            roi_morphology(image)
        passes.append(time.process_time() - start)
    our_cpu = min(passes)

    n = len(images)
    counts = ", ".join(f"{s}: {sum(1 for v in rois.values() if v[0] == s)}" for s in ("new", "old", "labelled"))
    print(f"{n} ROIs ({counts})")
    print(f"{'implementation':44s} {'CPU s':>8s} {'ROIs/s/core':>12s} {'ratio':>7s}")
    rows = [
        ("ifcbflow pipeline.morphology", our_cpu),
        ("ifcb-features, same features (RoiFeatures)", reference["cpu_s"]["subset"]),
        ("ifcb-features, whole v4 row (compute_features)", reference["cpu_s"]["v4_row"]),
    ]
    for label, cpu in rows:
        print(f"{label:44s} {cpu:8.3f} {n / cpu:12.1f} {cpu / our_cpu:6.2f}x")
    print()
    print(f"{'feature':24s} " + " ".join(f"{s + ' max rel':>14s}" for s in ("new", "old", "labelled")))
    for column in COLUMNS:
        cells = []
        for kind in ("new", "old", "labelled"):
            diffs = [
                relative_difference(float(ours[k][column]), float(reference["rows"][k][column]))
                for k in names
                if rois[k][0] == kind
            ]
            cells.append(f"{max(diffs):14.2e}" if diffs else f"{'-':>14s}")
        print(f"{column:24s} " + " ".join(cells))
    if args.record:
        def line(k: str) -> str:
            values = [float(format(reference["rows"][k][c], ".10g")) for c in COLUMNS]
            return f"  {json.dumps(k)}: {json.dumps([rois[k][0], *values])}"

        lines = [line(k) for k in names]
        header = {"reference": "WHOIGit/ifcb-features", "columns": ["set", *COLUMNS]}
        text = json.dumps(header)[:-1] + ', "rois": {\n' + ",\n".join(lines) + "\n}}\n"
        json.loads(text)  # a file the tests can read
        args.record.write_text(text)
        print(f"\nreference values written to {args.record}")

if __name__ == "__main__":
    main()
