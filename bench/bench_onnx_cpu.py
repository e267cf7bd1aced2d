"""utopia-b3 on the CPU: TensorFlow (Keras, the job's `Predictor`) against ONNX Runtime (the job's `OnnxPredictor` on
the model as `ifcbflow model export --onnx` converts it), on the same preprocessed uint8 inputs, in one process.
Prints a markdown table of ROIs/s (the best of `--repeats` timed passes after a warm-up) and the largest score
difference, with the load average at the start (the machine may be shared).

    .venv/bin/python bench/bench_onnx_cpu.py [--arch utopia-b3] [--images 1024] [--batch-sizes 64,256] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import model as _quiet_tensorflow  # noqa: F401  (first: it keeps TensorFlow's start-up lines quiet)


def _best_rate(predictor, chunks: list, images: int, repeats: int) -> float:
    list(predictor.run((chunk, None) for chunk in chunks))  # warm-up: tracing, session caches
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        list(predictor.run((chunk, None) for chunk in chunks))
        best = min(best, time.perf_counter() - start)
    return images / best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", default="utopia-b3")
    parser.add_argument("--images", type=int, default=1024)
    parser.add_argument("--batch-sizes", default="64,256")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    import keras
    import numpy as np

    from model.architectures import build
    from model.bundle import Bundle
    from model.convert.to_onnx import keras_to_onnx
    from model.inference.predictors import make_predictor
    from model.preprocess import PreprocessConfig

    load = os.getloadavg()
    keras.utils.set_random_seed(0)
    config = PreprocessConfig()
    model = build(args.arch, 10, config.size)
    onnx_model, difference = keras_to_onnx(model, config)
    keras_predictor = make_predictor(Bundle(model, [], config, args.arch))
    onnx_predictor = make_predictor(Bundle(onnx_model, [], config, f"onnx:{args.arch}"))
    x = np.random.default_rng(1).integers(0, 256, (args.images, config.size, config.size, 1), dtype=np.uint8)
    print(f"{args.arch}, {args.images} images of {config.size}x{config.size} uint8, {os.cpu_count()} cores, "
          f"load average at start {load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f} (1 / 5 / 15 min); "
          f"largest score difference {difference:.1g}\n")  # fmt: skip
    print("| batch | TensorFlow ROIs/s | ONNX Runtime ROIs/s | ONNX Runtime / TensorFlow |")
    print("|---:|---:|---:|---:|")
    for batch in (int(b) for b in args.batch_sizes.split(",")):
        chunks = [x[i : i + batch] for i in range(0, args.images, batch)]
        tf_rate = _best_rate(keras_predictor, chunks, args.images, args.repeats)
        ort_rate = _best_rate(onnx_predictor, chunks, args.images, args.repeats)
        print(f"| {batch} | {tf_rate:,.0f} | {ort_rate:,.0f} | {ort_rate / tf_rate:.2f} |")


if __name__ == "__main__":
    main()
