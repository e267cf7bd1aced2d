"""Model-only throughput: the bound the distributed classify job is measured against, and training speed. Inference:
images/s of the utopia-b3 CNN on already preprocessed uint8 tensors (no I/O, no decoding), for several batch sizes,
through `model.predict`, `model.predict_on_batch`, a jit-compiled `tf.function` (XLA) and the compiled predictor
that classification and a bundle's scores use (`model.inference.predictors.Predictor`). Training: images/s of
`model.fit` steps under MirroredStrategy with 1 and 2 replicas (each in a fresh process, since logical CPU devices
must be set before TensorFlow starts). Prints markdown tables.

    .venv/bin/python bench/bench_model.py [--arch utopia-b3] [--images 512] [--train-steps 6]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import model as _quiet_tensorflow  # noqa: F401  (first: it keeps TensorFlow's start-up lines quiet)


def _best_rate(run: Callable[[], object], images: int, repeats: int) -> float:
    """Images per second of the fastest of `repeats` timed runs, after one untimed warm-up (tracing, caches)."""
    run()
    best = min(_timed(run) for _ in range(repeats))
    return images / best


def _timed(run: Callable[[], object]) -> float:
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


def bench_inference(arch: str, n_images: int, batch_sizes: list[int], repeats: int) -> list[dict]:
    import numpy as np
    import tensorflow as tf

    from model.architectures import build
    from model.inference.predictors import Predictor

    model = build(arch, 10)
    predictor = Predictor(model)
    size = model.input_shape[1]
    x = np.random.default_rng(0).integers(0, 256, (n_images, size, size, 1), dtype=np.uint8)  # what preprocess makes
    rows = []
    for batch in batch_sizes:
        chunks = [x[i : i + batch] for i in range(0, n_images, batch)]
        xla = tf.function(lambda t: model(t, training=False), jit_compile=True, reduce_retracing=True)
        runs = {
            "predict": lambda b=batch: model.predict(x, batch_size=b, verbose=0),
            "predict_on_batch": lambda c=chunks: [model.predict_on_batch(t) for t in c],
            "tf.function+XLA": lambda c=chunks, f=xla: [f(t).numpy() for t in c],
            "Predictor (the job's)": lambda c=chunks: list(predictor.run((t, None) for t in c)),
        }
        rows.append({"batch": batch, **{name: _best_rate(run, n_images, repeats) for name, run in runs.items()}})
    return rows


def _step_clock_class() -> type:
    import keras

    class StepClock(keras.callbacks.Callback):
        """Wall time of every training step."""

        def __init__(self) -> None:
            super().__init__()
            self.seconds: list[float] = []

        def on_train_batch_begin(self, batch: int, logs: dict | None = None) -> None:
            self._start = time.perf_counter()

        def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
            self.seconds.append(time.perf_counter() - self._start)

    return StepClock


def bench_training(arch: str, replicas: int, batch_per_replica: int, steps: int) -> dict:
    """Run in a fresh process: images/s of `fit` steps (after a warm-up epoch) on preprocessed random uint8 tensors."""
    from model.training.train import make_strategy

    strategy = make_strategy(replicas)
    import keras
    import numpy as np
    import tensorflow as tf

    from model.architectures import build

    global_batch = batch_per_replica * strategy.num_replicas_in_sync
    with strategy.scope():
        model = build(arch, 10)
        model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy")
    size = model.input_shape[1]
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (global_batch * steps, size, size, 1), dtype=np.uint8)
    y = rng.integers(0, 10, len(x))
    data = tf.data.Dataset.from_tensor_slices((x, y)).batch(global_batch).repeat().prefetch(2)
    model.fit(data, epochs=1, steps_per_epoch=2, verbose=0)  # warm-up: tracing and first allocations
    clock = _step_clock_class()()
    model.fit(data, epochs=1, steps_per_epoch=steps, verbose=0, callbacks=[clock])
    # the median step resists the odd slow step when other work shares the cores
    step = float(np.median(clock.seconds))
    return {"replicas": strategy.num_replicas_in_sync, "global_batch": global_batch, "rate": global_batch / step}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="utopia-b3")
    parser.add_argument("--images", type=int, default=512, help="Images per inference measurement.")
    parser.add_argument("--batch-sizes", default="64,128,256,512")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--train-steps", type=int, default=7)
    parser.add_argument("--train-batch", type=int, default=16, help="Training batch per replica.")
    parser.add_argument("--train-replicas", type=int, help=argparse.SUPPRESS)  # internal: one training measurement
    args = parser.parse_args()
    if args.train_replicas:
        print(json.dumps(bench_training(args.arch, args.train_replicas, args.train_batch, args.train_steps)))
        return

    training = []
    for replicas in (1, 2):
        command = [sys.executable, __file__, "--arch", args.arch, "--train-replicas", str(replicas),
                   "--train-steps", str(args.train_steps), "--train-batch", str(args.train_batch)]  # fmt: skip
        out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
        training.append(json.loads(out.strip().splitlines()[-1]))
    inference = bench_inference(args.arch, args.images, [int(b) for b in args.batch_sizes.split(",")], args.repeats)

    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    where = f"{len(gpus)} GPU(s)" if gpus else f"CPU only, {os.cpu_count()} cores"
    methods = ["predict", "predict_on_batch", "tf.function+XLA", "Predictor (the job's)"]
    print(f"\n### {args.arch} inference, images/s on preprocessed uint8 tensors ({args.images} images; {where})\n")
    print("| batch | " + " | ".join(methods) + " |")
    print("|---:|" + "---:|" * len(methods))
    for row in inference:
        print(f"| {row['batch']} | " + " | ".join(f"{row[m]:.0f}" for m in methods) + " |")
    print(f"\n### {args.arch} training, images/s (MirroredStrategy, batch {args.train_batch} per replica)\n")
    print("| replicas | global batch | images/s | vs 1 replica |")
    print("|---:|---:|---:|---:|")
    for row in training:
        ratio = row["rate"] / training[0]["rate"]
        print(f"| {row['replicas']} | {row['global_batch']} | {row['rate']:.1f} | {ratio:.2f}x |")


if __name__ == "__main__":
    main()
