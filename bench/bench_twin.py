"""A bundle's ONNX twin against a fresh conversion of the same weights (`keras_to_onnx` of the bundle's Keras model,
as `model export --add-onnx` makes it), on bare ONNX Runtime: for each graph its node count, the run-time shape
computation feeding its Reshapes (`shape_ops_feeding_reshapes`) and its ROIs/s (the best of `--repeats` timed
passes of `--images` random uint8 images in batches of `--batch`, the two graphs alternating, back to back, after a
warm-up), with the load average at the start (the machine may be shared).

    .venv/bin/python bench/bench_twin.py BUNDLE [--threads 2] [--batch 256] [--images 1024] [--repeats 5] [--untrained]
"""

from __future__ import annotations

import argparse
import os
import time
from collections import Counter

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import model as _quiet_tensorflow  # noqa: F401  (first: it keeps TensorFlow's start-up lines quiet)

#: Operators that compute a shape at run time (with the Cast/Squeeze/Unsqueeze between them).
SHAPE_OPS = ("Shape", "Gather", "Slice", "Concat", "Cast", "Squeeze", "Unsqueeze", "Size")


def shape_ops_feeding_reshapes(proto) -> list[str]:
    """The op types of the nodes that compute a Reshape's target shape at run time (walked back from each Reshape's
    shape input through `SHAPE_OPS`), in graph order; [] where every Reshape has a constant target."""
    producers = {output: node for node in proto.graph.node for output in node.output}
    seen: dict[str, str] = {}
    pending = [node.input[1] for node in proto.graph.node if node.op_type == "Reshape" and len(node.input) > 1]
    while pending:
        node = producers.get(pending.pop())
        if node is None or node.name in seen or node.op_type not in SHAPE_OPS:
            continue
        seen[node.name] = node.op_type
        pending.extend(node.input)
    return [node.op_type for node in proto.graph.node if node.name in seen]


def describe(proto) -> str:
    ops = Counter(node.op_type for node in proto.graph.node)
    return f"{len(proto.graph.node)} nodes ({', '.join(f'{op} {n}' for op, n in sorted(ops.items()))})"


def session(data: bytes, threads: int):
    """A plain CPU session: `threads` intra-op threads, one inter-op thread, the runtime's default optimisations."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return ort.InferenceSession(data, sess_options=options, providers=["CPUExecutionProvider"])


def rates(graphs: dict[str, bytes], x, batch: int, threads: int, repeats: int) -> dict[str, float]:
    """ROIs/s of each graph on `x` in batches of `batch`: the best of `repeats` passes, the graphs taking turns."""
    sessions = {label: session(data, threads) for label, data in graphs.items()}
    chunks = [x[i : i + batch] for i in range(0, len(x), batch)]

    def one_pass(s) -> float:
        name = s.get_inputs()[0].name
        start = time.perf_counter()
        for chunk in chunks:
            s.run(None, {name: chunk})
        return time.perf_counter() - start

    for s in sessions.values():
        one_pass(s)  # warm-up: allocations, kernel selection
    best = dict.fromkeys(sessions, float("inf"))
    for _ in range(repeats):
        for label, s in sessions.items():
            best[label] = min(best[label], one_pass(s))
    return {label: len(x) / seconds for label, seconds in best.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("bundle")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--images", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--untrained", action="store_true",
                        help="also time the conversion of an untrained model of the same architecture (seed 0)")
    args = parser.parse_args()

    import numpy as np
    import onnx

    from model.convert.to_onnx import keras_to_onnx
    from model.inference.load import load_bundle

    twin = load_bundle(args.bundle, runtime="onnx")
    keras_bundle = load_bundle(args.bundle, runtime="keras")
    fresh, difference = keras_to_onnx(keras_bundle.model, keras_bundle.preprocess)
    graphs = {"twin in the bundle": twin.model.data, "fresh conversion": fresh.data}
    if args.untrained:  # zero batch-norm shifts: their additions fold away, so fewer nodes than any trained model's
        import keras

        from model.architectures import build

        keras.utils.set_random_seed(0)
        untrained = build(keras_bundle.arch, len(keras_bundle.classes), keras_bundle.preprocess.size)
        graphs["untrained, same architecture"] = keras_to_onnx(untrained, keras_bundle.preprocess)[0].data
    size = twin.preprocess.size
    x = np.random.default_rng(1).integers(0, 256, (args.images, size, size, 1), dtype=np.uint8)
    load = os.getloadavg()
    measured = rates(graphs, x, args.batch, args.threads, args.repeats)
    print(f"{keras_bundle.arch} ({args.bundle}), {args.images} images of {size}x{size} uint8 in batches of "
          f"{args.batch}, {args.threads} intra-op threads, {len(os.sched_getaffinity(0))} cores, load average at "
          f"start {load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f}; fresh conversion's largest score difference from "
          f"Keras {difference:.1g}\n")  # fmt: skip
    print("| graph | nodes | shape ops feeding a Reshape | ROIs/s |")
    print("|---|---|---|---:|")
    for label, data in graphs.items():
        proto = onnx.load_model_from_string(data)
        feeding = ", ".join(shape_ops_feeding_reshapes(proto)) or "none"
        print(f"| {label} | {describe(proto)} | {feeding} | {measured[label]:,.0f} |")


if __name__ == "__main__":
    main()
