"""The inference runtimes a worker may run a bundle on, each in a fresh process as a worker starts it: ONNX Runtime on
the bundle's ONNX twin, Keras on TensorFlow, Keras on JAX (where installed). For each: the time to import it and load
the bundle, the first batch (session set-up, tracing, compilation), the steady rate, the process's peak RSS, and the
largest score difference from TensorFlow. This is what `model.inference.runtimes` chooses by; the load average at the
start is printed (the machine may be shared).

    .venv/bin/python bench/bench_runtimes.py [--arch utopia-b3] [--batch 32] [--images 512] [--work /tmp/ifcbflow-rt]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

#: (label, KERAS_BACKEND or None for ONNX Runtime).
RUNTIMES = (("ONNX Runtime", None), ("Keras on TensorFlow", "tensorflow"), ("Keras on JAX", "jax"))

#: Runs in the fresh process: argv = bundle, backend or "onnx", batch, images, scores output path.
_MEASURE = """
import json, sys, time
started = time.perf_counter()
bundle_url, backend, batch, images, out = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]


def peak_rss_kib():  # VmHWM: getrusage's ru_maxrss would carry the forking parent's peak across exec
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))


import numpy as np
import model
from model.bundle import load_bundle
from model.inference.predictors import make_predictor
bundle = load_bundle(bundle_url, runtime="onnx" if backend == "onnx" else "keras")
loaded = time.perf_counter()
predictor = make_predictor(bundle, threads=len(__import__("os").sched_getaffinity(0)))
size = bundle.preprocess.size
x = np.random.default_rng(1).integers(0, 256, (batch, size, size, 1), dtype=np.uint8)
scores = predictor.predict(x)
first = time.perf_counter()
for _ in range(max(1, images // batch)):
    predictor.predict(x)
rate = max(1, images // batch) * batch / (time.perf_counter() - first)
np.save(out, scores)
print(json.dumps({"load_s": loaded - started, "first_s": first - loaded, "rate": rate,
                  "rss_mib": peak_rss_kib() / 1024,
                  "tensorflow": "tensorflow" in sys.modules}))
"""


def make_bundle(arch: str, path: Path) -> None:
    """An untrained `arch` (fixed seed) saved with its ONNX twin, as `train` writes bundles."""
    import keras

    from model.architectures import build
    from model.bundle import Bundle, save_bundle
    from model.convert.to_onnx import with_onnx_twin
    from model.preprocess import PreprocessConfig

    keras.utils.set_random_seed(0)
    config = PreprocessConfig()
    model = build(arch, 10, config.size)
    bundle = Bundle(model=model, classes=[f"class{i}" for i in range(10)], preprocess=config, arch=arch)
    save_bundle(with_onnx_twin(bundle), str(path))


def measure(bundle: Path, backend: str | None, batch: int, images: int, work: Path) -> dict | None:
    """One runtime in a fresh process; None when its backend is not installed."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    if backend is not None:
        env["KERAS_BACKEND"] = backend
    out = work / f"scores-{backend or 'onnx'}.npy"
    args = [str(bundle), backend or "onnx", str(batch), str(images), str(out)]
    run = subprocess.run([sys.executable, "-c", _MEASURE, *args], env=env, capture_output=True, text=True)
    if run.returncode != 0:
        if "No module named" in run.stderr:
            return None
        raise RuntimeError(f"{backend or 'onnx'} failed:\n{run.stderr[-2000:]}")
    return {**json.loads(run.stdout.strip().splitlines()[-1]), "scores": out}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", default="utopia-b3")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--images", type=int, default=512)
    parser.add_argument("--work", default="/tmp/ifcbflow-rt")
    args = parser.parse_args()

    import numpy as np

    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    bundle = work / f"{args.arch}.zip"
    if not bundle.exists():
        make_bundle(args.arch, bundle)
    load = os.getloadavg()
    results = {label: measure(bundle, backend, args.batch, args.images, work) for label, backend in RUNTIMES}
    reference = np.load(results["Keras on TensorFlow"]["scores"])
    cores = len(os.sched_getaffinity(0))
    print(f"{args.arch}, batches of {args.batch}, {args.images} images after the first batch, {cores} cores, "
          f"load average at start {load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f}\n")  # fmt: skip
    print("| runtime | import + load (s) | first batch (s) | ROIs/s | peak RSS (MiB) | score difference |")
    print("|---|---:|---:|---:|---:|---:|")
    for label, result in results.items():
        if result is None:
            print(f"| {label} | not installed | | | | |")
            continue
        difference = float(np.abs(np.load(result["scores"]) - reference).max())
        print(f"| {label} | {result['load_s']:.2f} | {result['first_s']:.2f} | {result['rate']:.0f} | "
              f"{result['rss_mib']:,.0f} | {difference:.1g} |")  # fmt: skip


if __name__ == "__main__":
    main()
