"""Synthetic IFCB archives: valid bins of plankton-like shapes, with their true class in `labels.csv`.

They give the pipeline and the model something of any size to run on without real data: newer (v2) naming and
columns with run/inhibit times (so volume analysed is defined), a realistic header, some trigger rows without an
image as in real bins, and byte offsets that address the `.roi` exactly. Each class is a shape kind that stays
recognisable after an aspect-preserving resize to 128x128 - all kinds share one size range, so size alone says
nothing. A seed makes the archive byte-for-byte reproducible.
"""

from __future__ import annotations

import io
import logging
import posixpath
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
from fsspec.implementations.local import LocalFileSystem
from PIL import Image, ImageDraw, ImageFilter

from pipeline.ifcb.adc import AdcSchemaV2
from pipeline.ifcb.archive import open_archive
from pipeline.ifcb.identifiers import day_folder, parse_bin_id, roi_id

log = logging.getLogger(__name__)

INSTRUMENT = "IFCB999"
BIN_INTERVAL = timedelta(minutes=20)
RUN_SECONDS = 1200.0
EMPTY_ROW_FRACTION = 0.1  # triggers whose blob was too small to keep an image
INHIBIT_PER_TRIGGER = 0.0993
ADC_FILE_FORMAT = (
    "trigger#, ADC_time, PMTA, PMTB, PMTC, PMTD, peakA, peakB, peakC, peakD, time of flight, grabtimestart, "
    "grabtimeend, ROIx, ROIy, ROIwidth, ROIheight,start_byte, comparator_out, STartPoint, SignalLength, status, "
    "runTime, inhibitTime"
)
WRITE_BATCH = 32  # bins written per fs.pipe call (concurrent uploads on object storage)

Polygon = np.ndarray  # (n, 2) float points, object coordinates centred on 0
Shape = tuple[list[Polygon], list[Polygon], list[Polygon]]  # (body, holes, darker details)


def _ellipse(rx: float, ry: float, cx: float = 0.0, cy: float = 0.0, n: int = 32) -> Polygon:
    angles = np.linspace(0, 2 * np.pi, n, endpoint=False)
    return np.stack([cx + rx * np.cos(angles), cy + ry * np.sin(angles)], axis=1)


def _bar(x0: float, y0: float, x1: float, y1: float, half_width: float) -> Polygon:
    """A rectangle of half-width `half_width` around the segment (x0, y0)-(x1, y1)."""
    direction = np.array([x1 - x0, y1 - y0])
    normal = np.array([-direction[1], direction[0]]) / (np.hypot(*direction) or 1.0) * half_width
    a, b = np.array([x0, y0]), np.array([x1, y1])
    return np.stack([a + normal, b + normal, b - normal, a - normal])


def _round(s: float, rng: np.random.Generator) -> Shape:
    nucleus = _ellipse(s * 0.3, s * 0.25, *rng.uniform(-0.3 * s, 0.3 * s, 2))
    return [_ellipse(s, s * rng.uniform(0.85, 1.0))], [], [nucleus]


def _chain(s: float, rng: np.random.Generator) -> Shape:
    k = int(rng.integers(3, 7))
    r = s / k
    cells = [_ellipse(r * 1.05, r * rng.uniform(0.8, 1.0), -s + r * (2 * i + 1)) for i in range(k)]
    return cells, [], []


def _needle(s: float, rng: np.random.Generator) -> Shape:
    return [_ellipse(s, s * rng.uniform(0.06, 0.11), n=40)], [], []


def _star(s: float, rng: np.random.Generator) -> Shape:
    k = int(rng.integers(5, 9))
    spikes = [
        _bar(0, 0, s * np.cos(a), s * np.sin(a), s * 0.05)
        for a in rng.uniform(0, 2 * np.pi) + np.arange(k) * 2 * np.pi / k
    ]
    return [_ellipse(s * 0.28, s * 0.28), *spikes], [], []


def _ring(s: float, rng: np.random.Generator) -> Shape:
    inner = rng.uniform(0.5, 0.7)
    return [_ellipse(s, s)], [_ellipse(s * inner, s * inner)], []


def _crescent(s: float, rng: np.random.Generator) -> Shape:
    return [_ellipse(s, s)], [_ellipse(s * 0.9, s * 0.9, cx=s * rng.uniform(0.4, 0.55))], []


def _triangle(s: float, rng: np.random.Generator) -> Shape:
    angles = np.pi / 2 + np.arange(3) * 2 * np.pi / 3
    return [np.stack([s * np.cos(angles), s * np.sin(angles)], axis=1)], [], []


def _cross(s: float, rng: np.random.Generator) -> Shape:
    w = s * rng.uniform(0.14, 0.2)
    return [_bar(-s, 0, s, 0, w), _bar(0, -s, 0, s, w)], [], []


def _square(s: float, rng: np.random.Generator) -> Shape:
    h = s * 0.72
    thirds = (-h / 3, h / 3)
    lines = [_bar(t, -h, t, h, s * 0.04) for t in thirds] + [_bar(-h, t, h, t, s * 0.04) for t in thirds]
    return [np.array([[-h, -h], [h, -h], [h, h], [-h, h]])], [], lines


def _zigzag(s: float, rng: np.random.Generator) -> Shape:
    k = int(rng.integers(4, 7))
    xs = np.linspace(-s, s, k + 1)
    ys = np.where(np.arange(k + 1) % 2 == 0, -1, 1) * s * 0.3
    segments = [_bar(xs[i], ys[i], xs[i + 1], ys[i + 1], s * 0.09) for i in range(k)]
    joints = [_ellipse(s * 0.09, s * 0.09, x, y, n=12) for x, y in zip(xs, ys, strict=True)]
    return segments + joints, [], []


_SHAPES: dict[str, Callable[[float, np.random.Generator], Shape]] = {
    "round_cell": _round,
    "chain": _chain,
    "needle": _needle,
    "star": _star,
    "ring": _ring,
    "crescent": _crescent,
    "triangle": _triangle,
    "cross": _cross,
    "square": _square,
    "zigzag": _zigzag,
}
#: Names of the shape kinds, in class order; `classes=K` uses the first K.
SYNTH_CLASSES: list[str] = list(_SHAPES)


def draw_roi(kind: str, rng: np.random.Generator) -> np.ndarray:
    """One ROI image (uint8, (height, width)) of shape `kind`: random size, orientation, grey levels and noise.

    Like real IFCB images: a bright background, a darker object, a margin around it, sensor noise.
    """
    s = rng.uniform(14, 44)
    body, holes, details = _SHAPES[kind](s, rng)
    angle = rng.uniform(0, 2 * np.pi)
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    body, holes, details = ([p @ rotation.T for p in group] for group in (body, holes, details))
    points = np.concatenate(body)
    margin = rng.integers(4, 12)
    low = points.min(axis=0) - margin
    width, height = (np.ceil(points.max(axis=0) + margin - low)).astype(int)
    background = int(rng.integers(165, 215))
    tone = int(rng.integers(40, 140))
    image = Image.new("L", (int(width), int(height)), background)
    draw = ImageDraw.Draw(image)
    for group, fill in ((body, tone), (holes, background), (details, max(tone - 35, 0))):
        for polygon in group:
            draw.polygon((polygon - low).ravel().tolist(), fill=fill)
    image = image.filter(ImageFilter.GaussianBlur(rng.uniform(0.5, 1.2)))
    noise = rng.standard_normal((int(height), int(width)), dtype=np.float32) * np.float32(rng.uniform(1.5, 5.0))
    noisy = np.asarray(image, dtype=np.float32) + noise
    return np.clip(noisy, 0, 255).astype(np.uint8)


def bin_files(
    bin_id: str, time: datetime, rois: int, classes: int, rng: np.random.Generator
) -> tuple[dict[str, bytes], list[tuple[str, str]]]:
    """The `.hdr`, `.adc` and `.roi` bytes of one bin (keys "hdr", "adc", "roi") and its (roi id, class) labels."""
    n_rows = rois + max(1, round(rois * EMPTY_ROW_FRACTION)) if rois else 0
    image_rows = np.sort(rng.choice(n_rows, size=rois, replace=False)) if n_rows else np.empty(0, dtype=int)
    kinds = rng.integers(0, classes, size=rois)
    images = [draw_roi(SYNTH_CLASSES[k], rng) for k in kinds]
    s = AdcSchemaV2
    table = np.zeros((n_rows, s.N_COLUMNS), dtype=np.float64)
    adc_time = np.sort(rng.uniform(0.5, RUN_SECONDS, n_rows))
    table[:, s.TRIGGER] = np.arange(1, n_rows + 1)
    table[:, s.ADC_TIME] = adc_time
    table[:, s.PMT_A : s.PEAK_D + 1] = rng.uniform(0.001, 1.0, (n_rows, 8))
    table[:, s.TIME_OF_FLIGHT] = table[:, s.COMPARATOR_OUT] = -999.0
    table[:, s.GRAB_TIME_START] = adc_time
    table[:, s.GRAB_TIME_END] = adc_time + 0.047
    table[:, s.RUN_TIME] = adc_time + 0.05
    table[:, s.INHIBIT_TIME] = 0.0008 + INHIBIT_PER_TRIGGER * np.arange(n_rows) + rng.uniform(0, 0.0004, n_rows)
    offset = 0
    image_of_row = dict(zip(image_rows.tolist(), images, strict=True))
    for row in range(n_rows):
        table[row, s.START_BYTE] = offset
        if (image := image_of_row.get(row)) is not None:
            height, width = image.shape
            table[row, [s.ROI_X, s.ROI_Y, s.ROI_WIDTH, s.ROI_HEIGHT]] = (
                rng.integers(0, 1380 - width),
                rng.integers(0, 1034 - height),
                width,
                height,
            )
            offset += width * height
    formats = ["%d", "%.6f"] + ["%.5f"] * 9 + ["%.6f"] * 2 + ["%d"] * 5 + ["%.6f", "%d", "%d", "%d", "%.6f", "%.6f"]
    adc = io.StringIO()
    np.savetxt(adc, table, fmt=formats, delimiter=",")
    run_time = float(table[-1, s.RUN_TIME]) + 0.3 if n_rows else 0.5
    inhibit_time = float(table[-1, s.INHIBIT_TIME]) + INHIBIT_PER_TRIGGER if n_rows else 0.0
    header = "\n".join(
        [
            "softwareVersion: Imaging FlowCytobot Acquisition Software version 2.0, build 999; synthetic",
            f"sampleTime: {time:%Y-%m-%dT%H:%M:%SZ}",
            f"imagerID: {int(INSTRUMENT[4:])}\t",
            "binarizeThreshold: 8\t",
            "minimumBlobArea: 2000\t",
            "SyringeSampleVolume: 5.000000\t",
            "runType: NORMAL",
            f"runTime: {run_time:.6f}\t",
            f"inhibitTime: {inhibit_time:.6f}\t",
            f"temperature: {rng.uniform(10, 30):.6f}\t",
            f"humidity: {rng.uniform(0, 60):.6f}\t",
            f"ADCFileFormat: {ADC_FILE_FORMAT}",
            "",
        ]
    )
    files = {
        "hdr": header.encode("ascii"),
        "adc": adc.getvalue().encode("ascii"),
        "roi": b"".join(image.tobytes() for image in images),
    }
    labels = [(roi_id(bin_id, int(row) + 1), SYNTH_CLASSES[k]) for row, k in zip(image_rows, kinds, strict=True)]
    return files, labels


def write_synthetic_archive(
    url: str,
    *,
    bins: int,
    rois: int,
    classes: int,
    seed: int,
    storage_options: dict[str, Any] | None = None,
    start: datetime = datetime(2024, 1, 1, tzinfo=UTC),
    flat: bool = False,
) -> list[str]:
    """Write `bins` bins of `rois` ROIs each (shapes from the first `classes` kinds) and `labels.csv` under `url`.

    Bins are 20 minutes apart from `start`, in day folders `DYYYY/DYYYYMMDD/` unless `flat`. Returns the bin ids.
    """
    if not 1 <= classes <= len(SYNTH_CLASSES):
        raise ValueError(f"classes must be between 1 and {len(SYNTH_CLASSES)}, got {classes}")
    if bins < 0 or rois < 0:
        raise ValueError(f"bins and rois must be >= 0, got bins={bins}, rois={rois}")
    fs, root = open_archive(url, storage_options)
    bin_ids: list[str] = []
    labels = ["roi_id,class"]
    pending: dict[str, bytes] = {}
    for index in range(bins):
        time = (start + index * BIN_INTERVAL).astimezone(UTC)
        bin_id = f"D{time:%Y%m%dT%H%M%S}_{INSTRUMENT}"
        folder = root if flat else posixpath.join(root, day_folder(parse_bin_id(bin_id)))
        files, bin_labels = bin_files(bin_id, time, rois, classes, np.random.default_rng([seed, index]))
        if isinstance(fs, LocalFileSystem):  # object stores have no folders to create
            fs.makedirs(folder, exist_ok=True)
        pending.update({posixpath.join(folder, f"{bin_id}.{ext}"): data for ext, data in files.items()})
        labels.extend(f"{rid},{kind}" for rid, kind in bin_labels)
        bin_ids.append(bin_id)
        if len(pending) >= 3 * WRITE_BATCH:
            fs.pipe(pending)
            pending = {}
    if isinstance(fs, LocalFileSystem):
        fs.makedirs(root, exist_ok=True)
    pending[posixpath.join(root, "labels.csv")] = ("\n".join(labels) + "\n").encode("ascii")
    fs.pipe(pending)
    log.info("wrote %d synthetic bins (%d ROIs each, %d classes) to %s", bins, rois, classes, url)
    return bin_ids
