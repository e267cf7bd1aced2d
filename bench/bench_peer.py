"""Side by side: ifcbflow and WHOI's `ifcb-inference` (0.4.0) on the same synthetic archives and the same networks.

What it measures: the wall clock of each whole command (start-up, model loading, reading, preprocessing,
inference, writing), timed around the subprocess, the median of `--repeats` runs, one command at a time:

- `ifcb-infer MODEL.onnx ARCHIVE --outdir OUT --cpuonly --notorch --batch 256` (`--peer-args`), in its own venv;
- `ifcbflow classify ARCHIVE -m BUNDLE -o STORE --workers 1` and `--workers 2` (plus `--ifcbflow-args`).

Every repeat writes to a fresh output folder or store (ifcb-inference skips bins whose output exists, ifcbflow bins
already in its store). Rows (`--sizes`): `1bin` (1 bin of 100 ROIs), `20k` (200 bins x 100 ROIs), `20k-b3` (the
same archive with utopia-b3), `100k` (1,000 bins x 100 ROIs). The archives are `pipeline.ifcb.synth` archives
(seed 0, 4 classes), written once under `--work` and reused.

The networks: a zero-cost model (a global mean and one dense layer: the tools' own overhead) and utopia-b3
(ifcbUTOPIA's CNN), untrained, seed 0, at `--size` (128). ifcbflow runs the Keras bundle with its ONNX twin, as
`train` writes bundles, on the runtime it chooses (`--ifcbflow-args "--runtime keras"` for TensorFlow;
`--ifcbflow-bundle onnx`: the ONNX export); ifcb-inference runs the ONNX export (`ifcbflow model export --onnx`)
behind an input adapter, checked to give the same scores: ifcb-inference feeds float32 (N, 3, S, S) in [0, 1] (S:
the graph's last input dimension) where the bundle takes uint8 (N, S, S, 1), so the adapter takes channel 0, moves
it last and scales it back to 0..255. Same network, not the same scores: the preprocessing differs. ifcb-inference
(sanstorch loader) stretches each ROI to S x S with Pillow's `Image.resize` (bicubic, aspect lost), copies it to 3
channels and divides by 255, one bin at a time in one process; ifcbflow applies the bundle's contract (ifcbUTOPIA's:
OpenCV bilinear resize of the long side, centred padding, min-max stretch), with its feeders and workers.

The peer is installed into `--peer-venv` (created with `python -m venv` if absent) with pip, pinned:

    pip install "ifcbkit @ git+https://github.com/WHOIGit/ifcbkit.git@b66492ccccbfbd2181fbf1bb3d9ddc740f9461b9"
    pip install --no-deps \
        "ifcb-infer @ git+https://github.com/WHOIGit/ifcb-inference.git@acae67c28dd08c0f36659420591687621ced27c0"
    pip install onnx onnxruntime numpy tqdm

(ifcbkit 0.3.1 and ifcb-inference 0.4.0, the tags' commits; ifcb-inference's own requirement on ifcbkit is an
unpinned git URL, hence `--no-deps` and its `[cpu]` dependencies listed.) Without access to GitHub, give local
checkouts of those commits instead (`--peer-source DIR --ifcbkit-source DIR`, e.g. from `git archive`); the other
packages come from the package index pip is configured with.

    .venv/bin/python bench/bench_peer.py                              # all rows, 3 repeats
    .venv/bin/python bench/bench_peer.py --sizes 1bin,20k --repeats 1 --peer-source ../ifcb-inference \
        --ifcbkit-source ../ifcbkit
    .venv/bin/python bench/bench_peer.py --skip-install --ifcbflow-args "--batch-size 512"
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import shutil
import statistics
import subprocess
import sys
import time
import zipfile
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

PEER_URL = "https://github.com/WHOIGit/ifcb-inference.git"
PEER_COMMIT = "acae67c28dd08c0f36659420591687621ced27c0"  # v0.4.0
IFCBKIT_URL = "https://github.com/WHOIGit/ifcbkit.git"
IFCBKIT_COMMIT = "b66492ccccbfbd2181fbf1bb3d9ddc740f9461b9"  # v0.3.1
PEER_DEPENDENCIES = ["onnx", "onnxruntime", "numpy", "tqdm"]  # ifcb-infer[cpu] less ifcbkit
CLASSES = 4
SEED = 0
ADAPTER_TOLERANCE = 1e-5
COLUMNS = ("ifcb-inference", "ifcbflow, 1 worker", "ifcbflow, 2 workers")


@dataclass(frozen=True)
class Row:
    """One line of the table: which archive, which network."""

    label: str
    bins: int
    rois: int
    arch: str

    @property
    def total(self) -> int:
        return self.bins * self.rois


ROWS: dict[str, Row] = {
    "1bin": Row("1 bin (100 ROIs), zero-cost model", 1, 100, "zero-cost"),
    "20k": Row("20,000 ROIs, zero-cost model", 200, 100, "zero-cost"),
    "20k-b3": Row("20,000 ROIs, utopia-b3", 200, 100, "utopia-b3"),
    "100k": Row("100,000 ROIs, zero-cost model", 1000, 100, "zero-cost"),
}


def run(command: list[str]) -> subprocess.CompletedProcess[str]:
    """Run `command`; on failure, raise with (the tail of) its output."""
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        tail = (done.stdout + done.stderr)[-4000:]
        raise RuntimeError(f"{shlex.join(command)} exited with {done.returncode}:\n{tail}")
    return done


# --- the peer's installation ---


def pip_spec(name: str, url: str, commit: str, source: Path | None) -> str:
    """A local checkout where given, else the pinned git URL."""
    return str(source.resolve()) if source else f"{name} @ git+{url}@{commit}"


def install_peer(venv: Path, peer_source: Path | None, ifcbkit_source: Path | None) -> None:
    """Create `venv` if absent and install ifcbkit, ifcb-inference and its CPU dependencies into it."""
    if not (venv / "bin" / "python").exists():
        run([sys.executable, "-m", "venv", str(venv)])
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet"]
    run([*pip, pip_spec("ifcbkit", IFCBKIT_URL, IFCBKIT_COMMIT, ifcbkit_source)])
    run([*pip, "--no-deps", pip_spec("ifcb-infer", PEER_URL, PEER_COMMIT, peer_source)])
    run([*pip, *PEER_DEPENDENCIES])


def peer_versions(venv: Path) -> dict[str, str]:
    """Versions of the peer's packages, read in its venv."""
    code = (
        "import importlib.metadata as m, json; "
        "print(json.dumps({p: m.version(p) for p in ('ifcb-infer', 'ifcbkit', 'onnxruntime')}))"
    )
    return json.loads(run([str(venv / "bin" / "python"), "-c", code]).stdout)


# --- archives and models ---


def ensure_archive(work: Path, bins: int, rois: int) -> Path:
    """The synthetic archive of `bins` x `rois` under `work`, written once (labels.csv is written last)."""
    from pipeline.ifcb.synth import write_synthetic_archive

    archive = work / f"archive-{bins}x{rois}"
    if not (archive / "labels.csv").exists():
        shutil.rmtree(archive, ignore_errors=True)
        started = time.perf_counter()
        write_synthetic_archive(str(archive), bins=bins, rois=rois, classes=CLASSES, seed=SEED)
        print(f"wrote {archive} ({bins} bins x {rois} ROIs) in {time.perf_counter() - started:.0f} s", flush=True)
    return archive


def keras_model(arch: str, size: int) -> object:
    """An untrained model: `arch` from the registry, or the zero-cost model (mean grey level, one dense layer)."""
    import keras

    from model.architectures import build, uint8_image_input

    keras.utils.set_random_seed(SEED)
    if arch != "zero-cost":
        return build(arch, CLASSES, size)
    inputs, x = uint8_image_input((size, size, 1), scale=1 / 255)
    x = keras.layers.GlobalAveragePooling2D(name="mean")(x)
    outputs = keras.layers.Dense(CLASSES, activation="softmax", name="probabilities")(x)
    return keras.Model(inputs, outputs, name="zero_cost")


def ensure_bundles(work: Path, arch: str, size: int, ifcbflow: list[str]) -> tuple[Path, Path]:
    """(the Keras bundle with its ONNX twin, as `train` writes bundles; its ONNX export), made once under
    `work`/models."""
    from model.bundle import Bundle, save_bundle
    from model.convert.to_onnx import with_onnx_twin
    from model.preprocess import PreprocessConfig
    from pipeline.ifcb.synth import SYNTH_CLASSES

    folder = work / "models"
    folder.mkdir(parents=True, exist_ok=True)
    keras_bundle, onnx_bundle = folder / f"{arch}-{size}-twin.zip", folder / f"{arch}-{size}-onnx.zip"
    if not keras_bundle.exists():
        bundle = Bundle(keras_model(arch, size), SYNTH_CLASSES[:CLASSES], PreprocessConfig(size=size), arch)
        save_bundle(with_onnx_twin(bundle), str(keras_bundle))
    if not onnx_bundle.exists():
        run([*ifcbflow, "model", "export", str(keras_bundle), "--onnx", "--out", str(onnx_bundle)])
    return keras_bundle, onnx_bundle


def peer_input_adapter(graph_bytes: bytes) -> bytes:
    """The ONNX graph behind the input ifcb-inference feeds: float32 (N, 3, S, S) in [0, 1] -> uint8 (N, S, S, 1)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    model = onnx.load_from_string(graph_bytes)
    graph = model.graph
    original = graph.input[0]
    size = original.type.tensor_type.shape.dim[1].dim_value
    if original.type.tensor_type.elem_type != TensorProto.UINT8 or not size:
        raise ValueError(f"expected a uint8 (N, S, S, 1) input, got {original}")
    new_input = helper.make_tensor_value_info("images", TensorProto.FLOAT, ["batch", 3, size, size])
    constants = {
        "adapter_starts": np.array([0], np.int64),
        "adapter_ends": np.array([1], np.int64),
        "adapter_axes": np.array([1], np.int64),
        "adapter_255": np.array(255.0, np.float32),
    }
    nodes = [
        helper.make_node("Slice", ["images", "adapter_starts", "adapter_ends", "adapter_axes"], ["adapter_grey"]),
        helper.make_node("Transpose", ["adapter_grey"], ["adapter_last"], perm=[0, 2, 3, 1]),
        helper.make_node("Mul", ["adapter_last", "adapter_255"], ["adapter_levels"]),
        helper.make_node("Round", ["adapter_levels"], ["adapter_rounded"]),
        helper.make_node("Cast", ["adapter_rounded"], [original.name], to=TensorProto.UINT8),
    ]
    graph.initializer.extend(numpy_helper.from_array(value, name) for name, value in constants.items())
    old_nodes = list(graph.node)
    del graph.node[:]
    graph.node.extend(nodes + old_nodes)
    graph.input.remove(original)
    graph.input.insert(0, new_input)
    onnx.checker.check_model(model)
    return model.SerializeToString()


def check_adapter(original: bytes, adapted: bytes, size: int) -> float:
    """Largest score difference between the export on uint8 images and the adapted graph on the peer's floats."""
    import onnxruntime as ort

    pixels = np.random.default_rng(SEED).integers(0, 256, (8, size, size, 1), dtype=np.uint8)
    floats = np.repeat(pixels.transpose(0, 3, 1, 2), 3, axis=1).astype(np.float32) / 255.0
    plain, wrapped = (ort.InferenceSession(g, providers=["CPUExecutionProvider"]) for g in (original, adapted))
    expected = plain.run(None, {plain.get_inputs()[0].name: pixels})[0]
    got = wrapped.run(None, {"images": floats})[0]
    difference = float(np.abs(expected - got).max())
    if not difference <= ADAPTER_TOLERANCE:
        raise ValueError(f"the adapted graph differs from the export by {difference:.3g}")
    return difference


def ensure_peer_model(onnx_bundle: Path, size: int) -> Path:
    """The peer's model file next to the bundle: the export's model.onnx behind the input adapter."""
    target = onnx_bundle.with_suffix(".onnx")
    if not target.exists():
        with zipfile.ZipFile(onnx_bundle) as archive:
            original = archive.read("model.onnx")
        adapted = peer_input_adapter(original)
        check_adapter(original, adapted, size)
        target.write_bytes(adapted)
    return target


# --- the timed commands ---


def timed(command: list[str]) -> tuple[float, str]:
    """(wall clock seconds of the whole command, its stdout)."""
    started = time.perf_counter()
    done = run(command)
    return time.perf_counter() - started, done.stdout


def time_peer(ifcb_infer: Path, model: Path, archive: Path, out: Path, peer_args: list[str], row: Row) -> float:
    shutil.rmtree(out, ignore_errors=True)
    seconds, _ = timed([str(ifcb_infer), str(model), str(archive), "--outdir", str(out), *peer_args])
    written = list(out.rglob("*.csv"))
    rois = sum(len(path.read_text().splitlines()) for path in written)  # no header: no --classes
    if len(written) != row.bins or rois != row.total:
        raise RuntimeError(f"ifcb-inference wrote {len(written)} score files, {rois} rows for {row.bins} bins")
    return seconds


def time_ifcbflow(
    ifcbflow: list[str], bundle: Path, archive: Path, store: Path, workers: int, extra: list[str], row: Row
) -> float:
    shutil.rmtree(store, ignore_errors=True)
    command = [*ifcbflow, "classify", str(archive), "-m", str(bundle), "-o", str(store), "--workers", str(workers)]
    seconds, stdout = timed([*command, "--json", *extra])
    rois = json.loads(stdout)["rois"]
    if rois != row.total:
        raise RuntimeError(f"ifcbflow classified {rois} ROIs of {row.total}")
    return seconds


def measure_row(row: Row, args: argparse.Namespace, ifcbflow: list[str], ifcb_infer: Path) -> list[float]:
    """Median seconds per column; the repeats go round the columns so drifting load falls on all of them alike."""
    work: Path = args.work
    archive = ensure_archive(work, row.bins, row.rois)
    keras_bundle, onnx_bundle = ensure_bundles(work, row.arch, args.size, ifcbflow)
    peer_model = ensure_peer_model(onnx_bundle, args.size)
    bundle = onnx_bundle if args.ifcbflow_bundle == "onnx" else keras_bundle
    peer_args, extra = shlex.split(args.peer_args), shlex.split(args.ifcbflow_args)
    out = work / "out"
    commands = [
        lambda: time_peer(ifcb_infer, peer_model, archive, out / "peer", peer_args, row),
        lambda: time_ifcbflow(ifcbflow, bundle, archive, out / "ifcbflow-1.zarr", 1, extra, row),
        lambda: time_ifcbflow(ifcbflow, bundle, archive, out / "ifcbflow-2.zarr", 2, extra, row),
    ]
    samples: list[list[float]] = [[] for _ in commands]
    for repeat in range(args.repeats):
        for column, command in enumerate(commands):
            samples[column].append(command())
            print(f"{row.label}, {COLUMNS[column]}, repeat {repeat + 1}: {samples[column][-1]:.1f} s", flush=True)
    shutil.rmtree(out, ignore_errors=True)
    return [statistics.median(s) for s in samples]


# --- the report ---


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def header(started: datetime, load: tuple[float, ...], peer: dict[str, str], bundle: str) -> str:
    ours = {p: metadata.version(p) for p in ("ifcbflow", "keras", "tensorflow-cpu", "onnxruntime") if installed(p)}
    return (
        f"{started:%Y-%m-%d %H:%M} UTC; {os.cpu_count()} cores, {cpu_model()}; load average at start "
        f"{' '.join(f'{x:.2f}' for x in load)}, at the end {os.getloadavg()[0]:.2f}; "
        f"ours: {listed(ours)} ({bundle} bundle); peer: {listed(peer)}"
    )


def listed(versions: dict[str, str]) -> str:
    return ", ".join(f"{package} {version}" for package, version in versions.items())


def installed(package: str) -> bool:
    try:
        metadata.version(package)
    except metadata.PackageNotFoundError:
        return False
    return True


def table(results: dict[str, list[float]]) -> str:
    lines = ["| work | " + " | ".join(COLUMNS) + " |", "|---|---:|---:|---:|"]
    for key, cells in results.items():
        lines.append(f"| {ROWS[key].label} | " + " | ".join(f"{s:.1f} s" for s in cells) + " |")
    key = "100k" if "100k" in results else max(results, key=lambda k: ROWS[k].total)
    rates = [ROWS[key].total / seconds for seconds in results[key]]
    lines.append(f"| {ROWS[key].label}: ROIs/s | " + " | ".join(f"{rate:,.0f}" for rate in rates) + " |")
    lines.append(f"\n{ROWS[key].label}: ifcbflow, 2 workers / ifcb-inference ROIs/s = {rates[2] / rates[0]:.2f}")
    return "\n".join(lines)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--sizes", default=",".join(ROWS), help=f"Rows to measure, of {', '.join(ROWS)}.")
    parser.add_argument("--repeats", type=int, default=3, help="Runs of each command; the median is shown.")
    parser.add_argument("--work", type=Path, default=Path("/tmp/ifcbflow-peer-bench"), help="Archives, models.")
    parser.add_argument("--peer-venv", type=Path, default=Path("/tmp/ifcbflow-peer"), help="The peer's venv.")
    parser.add_argument("--peer-source", type=Path, help="A checkout of ifcb-inference 0.4.0 (else its git URL).")
    parser.add_argument("--ifcbkit-source", type=Path, help="A checkout of ifcbkit 0.3.1 (else its git URL).")
    parser.add_argument("--skip-install", action="store_true", help="Use the peer venv as it is.")
    parser.add_argument("--peer-args", default="--cpuonly --notorch --batch 256", help="ifcb-infer's options.")
    parser.add_argument("--ifcbflow-args", default="", help="More options of `ifcbflow classify`.")
    parser.add_argument("--ifcbflow-bundle", choices=("keras", "onnx"), default="keras", help="Which bundle it runs.")
    parser.add_argument("--ifcbflow", default=str(Path(sys.executable).with_name("ifcbflow")), help="Its command.")
    parser.add_argument("--size", type=int, default=128, help="Model input size (both tools).")
    args = parser.parse_args()
    unknown = set(args.sizes.split(",")) - set(ROWS)
    if unknown:
        parser.error(f"unknown sizes {sorted(unknown)}; choose from {', '.join(ROWS)}")
    return args


def main() -> None:
    args = parse_args()
    started, load = datetime.now(UTC), os.getloadavg()
    if not args.skip_install:
        install_peer(args.peer_venv, args.peer_source, args.ifcbkit_source)
    ifcb_infer = args.peer_venv / "bin" / "ifcb-infer"
    if not ifcb_infer.exists():
        sys.exit(f"no {ifcb_infer}: install the peer (leave out --skip-install)")
    ifcbflow = shlex.split(args.ifcbflow)
    results = {key: measure_row(ROWS[key], args, ifcbflow, ifcb_infer) for key in args.sizes.split(",")}
    print()
    print(header(started, load, peer_versions(args.peer_venv), args.ifcbflow_bundle))
    print()
    print(table(results))


if __name__ == "__main__":
    main()
