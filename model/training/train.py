"""Training: labelled ROIs in, a verified model bundle out.

Data-parallel over every local GPU with `tf.distribute.MirroredStrategy` (or N logical CPU devices, so laptops and
tests run the same multi-replica code), so it needs Keras' TensorFlow backend. The input is a prepared training set
(`model.training.prepared`: the `model.preprocess` output inference computes, made once), streamed with tf.data shard
by shard: shards in a seeded random order, interleaved, then a bounded shuffle buffer, augmentation as uint8 (a quarter
of float32's memory), batches and a fixed prefetch, so memory is bounded by the shuffle buffer and the prefetch
depth whatever the set's size; the model's first layer casts on the device. The split, class weights and
thresholds need only the labels and groups, read without the images. A killed run resumes from its last finished
epoch (Keras BackupAndRestore for weights and optimizer; `EpochLedger` for the best epoch, early-stopping patience
and the history CSV, where each epoch also has its images/s per replica and input stall time). The bundle gets
per-class thresholds fitted on the validation split (`model.training.thresholds`), with their fit (F1 per class with
argmax and with the threshold) in its provenance.
"""

from __future__ import annotations

import bisect
import contextlib
import csv
import hashlib
import json
import logging
import math
import shutil
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from model import architectures
from model.bundle import Bundle, check_classes, save_bundle
from model.convert.to_onnx import twin_if_possible
from model.decision import UNCLASSIFIED_NAME
from model.training.data import split_by_group
from model.training.evaluate import evaluate
from model.training.prepared import PreparedSet
from model.training.thresholds import fit_thresholds
from model.versions import installed_versions

log = logging.getLogger(__name__)

HISTORY_CSV = "history.csv"
#: ROIs in the training shuffle buffer: 128 MiB of 128x128 inputs, about 8 shards
#: (`model.training.prepared.SHARD_ROIS`), on top of shards already interleaved `CYCLE_LENGTH` at a time in a random
#: shard order.
SHUFFLE_BUFFER = 8192
#: Shards read at once (in parallel) and interleaved ROI by ROI.
CYCLE_LENGTH = 4
#: Batches prepared ahead of the training step.
PREFETCH_BATCHES = 4
#: Images per model call when scoring the held-out parts.
SCORE_BATCH = 256


def require_tensorflow_backend() -> None:
    """Raise RuntimeError with what to do unless Keras runs on TensorFlow: MirroredStrategy and tf.data are
    TensorFlow's, so training cannot run on JAX (inference can)."""
    import keras

    backend = keras.backend.backend()
    if backend != "tensorflow":
        raise RuntimeError(
            f"training needs Keras' TensorFlow backend (tf.distribute.MirroredStrategy, tf.data) but KERAS_BACKEND "
            f"selects {backend!r}; unset KERAS_BACKEND or set it to tensorflow to train (inference runs on any backend)"
        )


def make_strategy(replicas: int | None = None) -> Any:
    """A MirroredStrategy over the first `replicas` GPUs (all when None), or over `replicas` logical CPU devices.

    Logical CPUs can only be configured before TensorFlow initialises its devices, so call this before any other
    TensorFlow work in the process; a clear error says so otherwise.
    """
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        count = len(gpus) if replicas is None else replicas
        if not 1 <= count <= len(gpus):
            raise ValueError(f"{count} replicas requested but {len(gpus)} GPU(s) are visible")
        for gpu in gpus:
            with contextlib.suppress(RuntimeError):  # already initialised: growth was set by whoever did it
                tf.config.experimental.set_memory_growth(gpu, True)
        return tf.distribute.MirroredStrategy([f"/gpu:{i}" for i in range(count)])
    count = replicas or 1
    if count < 1:
        raise ValueError(f"replicas must be >= 1, got {count}")
    if count > 1:
        cpu = tf.config.list_physical_devices("CPU")[0]
        with contextlib.suppress(RuntimeError):  # already initialised; checked just below
            tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * count)
    available = len(tf.config.list_logical_devices("CPU"))
    if available < count:
        raise RuntimeError(
            f"{count} CPU replicas requested but TensorFlow already started with {available} logical CPU(s); "
            "choose the replicas before any other TensorFlow work in this process"
        )
    return tf.distribute.MirroredStrategy([f"/cpu:{i}" for i in range(count)])


@contextlib.contextmanager
def _dtype_policy(name: str) -> Iterator[None]:
    """Set Keras' global dtype policy for model building, restoring the previous one afterwards."""
    import keras

    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(name)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


def balanced_class_weights(labels: np.ndarray, n_classes: int) -> np.ndarray:
    """Weight per class = n / (classes present * count), so each present class weighs the same in the loss."""
    counts = np.bincount(labels, minlength=n_classes).astype(np.float64)
    present = counts > 0
    weights = np.zeros(n_classes)
    weights[present] = len(labels) / (present.sum() * counts[present])
    return weights


class InputClock:
    """When each training step began and when the input pipeline delivered each batch: the input stall per step.

    `stamp` runs in the tf.data pipeline as each batch leaves it (`make_dataset(on_batch=...)`), `asked` when the
    training loop starts a step (`EpochLedger`). The loop takes batches a few ahead of the step that computes them
    (Keras and the distribution's device prefetch), so a step is not paired with "its" batch: a step whose call
    sees a batch delivered only during it waited from its start until that delivery (the latest one in it, while
    a batch already waiting in the buffers is taken at once, at the step's start). So the stall of a step is
    `latest delivery during the step - step start`, 0 when nothing was delivered during it; a lower bound by the
    copy to the device after the pipeline. The run's first step (tracing the model) is left out.
    """

    def __init__(self) -> None:
        self.ready: list[float] = []  # appended in time order by the pipeline's last stage
        self.asks: list[float] = []
        self._traced = False

    def stamp(self, labels: np.ndarray) -> np.ndarray:
        self.ready.append(time.perf_counter())
        return labels

    def asked(self) -> None:
        self.asks.append(time.perf_counter())

    def epoch(self, ended: float) -> tuple[int, float]:
        """(steps, seconds waited for input) of the epoch whose training ended at `ended`; its records are dropped
        (deliveries after `ended` are the next epoch's, kept), so the clock holds one epoch at most."""
        starts, ready = self.asks, self.ready
        total = 0.0
        for start, end in zip(starts, [*starts[1:], ended], strict=True):
            if not self._traced:  # the run's first step traces the model, while the pipeline fills its buffers
                self._traced = True
                continue
            last = bisect.bisect_left(ready, end) - 1
            if last >= 0 and ready[last] >= start:
                total += ready[last] - start
        self.asks = []
        self.ready = ready[bisect.bisect_left(ready, ended) :]
        return len(starts), total


def make_dataset(
    prepared: PreparedSet,
    rows: np.ndarray,
    global_batch: int,
    *,
    training: bool,
    seed: int,
    class_weights: np.ndarray | None = None,
    augment: bool = True,
    shuffle_buffer: int = SHUFFLE_BUFFER,
    cycle_length: int = CYCLE_LENGTH,
    on_batch: Callable[[np.ndarray], np.ndarray] | None = None,
) -> Any:
    """tf.data pipeline of (uint8 images (batch, size, size, 1), int32 labels[, float32 weights]) from `rows` of a
    prepared set, streamed shard by shard.

    For training: shards in a seeded random order (reshuffled each epoch), `cycle_length` of them read in parallel
    and interleaved, a `shuffle_buffer`-ROI shuffle, flip/rot90 augmentation (when `augment`), per-sample class
    weights (when given); otherwise shards in order, rows in `rows`' sorted order. Batched to the global batch,
    `PREFETCH_BATCHES` ahead; `on_batch(labels) -> labels` runs as each batch leaves the pipeline (`InputClock`).
    Memory: `cycle_length` shards being read, the shuffle buffer and the prefetched batches.
    """
    import tensorflow as tf

    rows = np.sort(np.asarray(rows, dtype=np.int64))
    shard_rois, size = prepared.shard_rois, prepared.config.size
    shard_of = rows // shard_rois
    shards, first = np.unique(shard_of, return_index=True)
    bounds = np.append(first, len(rows))
    local = rows - shard_of * shard_rois
    labels = prepared.labels()[rows].astype(np.int32)
    columns = [labels] if class_weights is None else [labels, class_weights[labels].astype(np.float32)]
    dtypes = (tf.uint8, tf.int32) if class_weights is None else (tf.uint8, tf.int32, tf.float32)

    def read(position: np.ndarray) -> tuple[np.ndarray, ...]:
        start, end = bounds[int(position)], bounds[int(position) + 1]
        images = prepared.read_shard(int(shards[int(position)]))[local[start:end]]
        return (images, *(column[start:end] for column in columns))

    def load(position: tf.Tensor) -> tuple[tf.Tensor, ...]:
        images, *rest = tf.numpy_function(read, [position], dtypes, stateful=False)
        return (tf.ensure_shape(images, (None, size, size, 1)), *(tf.ensure_shape(c, (None,)) for c in rest))

    ds = tf.data.Dataset.range(len(shards))
    if training:
        ds = ds.shuffle(max(1, len(shards)), seed=seed, reshuffle_each_iteration=True)
        ds = ds.interleave(
            lambda position: tf.data.Dataset.from_tensor_slices(load(position)),
            cycle_length=max(1, min(cycle_length, len(shards))), block_length=1,
            num_parallel_calls=max(1, min(cycle_length, len(shards))), deterministic=True,
        )  # fmt: skip
        # A ROI sliced out of its shard shares the shard's buffer: a copy of its own lets the shard go, so the
        # shuffle buffer holds `shuffle_buffer` ROIs, not a slice of every shard it has seen.
        ds = ds.map(_own_copy, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        ds = ds.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
        if augment:
            ds = ds.map(_augment, num_parallel_calls=tf.data.AUTOTUNE)
    else:
        ds = ds.map(load, num_parallel_calls=max(1, cycle_length), deterministic=True).unbatch()
    # a last partial training batch smaller than the replica count would leave a replica's BatchNorm empty
    drop = training and len(rows) >= global_batch
    ds = ds.batch(global_batch, drop_remainder=drop)
    n_batches = len(rows) // global_batch if drop else math.ceil(len(rows) / global_batch)
    ds = ds.apply(tf.data.experimental.assert_cardinality(n_batches)).prefetch(PREFETCH_BATCHES)
    if on_batch is not None:

        def stamped(images: tf.Tensor, batch_labels: tf.Tensor, *rest: tf.Tensor) -> tuple[tf.Tensor, ...]:
            out = tf.numpy_function(on_batch, [batch_labels], tf.int32, stateful=True)
            return (images, tf.ensure_shape(out, batch_labels.shape), *rest)

        ds = ds.map(stamped)  # synchronous: it runs when the batch leaves the prefetch buffer
        options = tf.data.Options()
        options.experimental_optimization.inject_prefetch = False  # no buffer after the stamp
        ds = ds.with_options(options)
    return ds


def _own_copy(image: Any, *rest: Any) -> tuple[Any, ...]:
    """The image in a buffer of its own (TensorFlow's slices of a batch alias the batch's buffer)."""
    import tensorflow as tf

    return (tf.raw_ops.DeepCopy(x=image), *rest)


def _augment(image: Any, *rest: Any) -> tuple[Any, ...]:
    """Plankton has no up, down, left or right: random flips and quarter turns keep the label."""
    import tensorflow as tf

    image = tf.image.random_flip_left_right(image)
    image = tf.image.random_flip_up_down(image)
    # A quarter turn transposes; oneDNN has no uint8 transpose on some AVX-512 CPUs (AMD EPYC) and says so with an
    # error line at the first batch, so the turn is made on float32 (exact for 0..255) and cast back.
    turned = tf.image.rot90(tf.cast(image, tf.float32), k=tf.random.uniform([], 0, 4, dtype=tf.int32))
    return (tf.cast(turned, image.dtype), *rest)


def _epoch_ledger_class() -> type:
    """Defined lazily so importing this module does not import Keras/TensorFlow (slow, and it fixes devices)."""
    import keras

    class EpochLedger(keras.callbacks.Callback):
        """Best epoch by the monitored loss, early stopping and the history CSV, all persisted in the checkpoint
        directory so a resumed run continues them exactly (Keras' EarlyStopping/CSVLogger forget on restart).

        Each history row also has the epoch's `images_per_s_per_replica` and `input_stall_s` (seconds the training
        loop waited for its next batch, `InputClock`), beside loss and accuracy.

        Must come before BackupAndRestore in the callback list: an epoch counts as done once the backup is written,
        so a kill in between redoes the epoch and this ledger's rows for it are dropped on resume.
        """

        def __init__(
            self, directory: Path, monitor: str, patience: int, clock: InputClock, global_batch: int, replicas: int
        ) -> None:
            super().__init__()
            self.directory = directory
            self.monitor = monitor
            self.patience = patience
            self.state_path = directory / "ledger.json"
            self.best_path = directory / "best.weights.h5"
            self.history_path = directory / HISTORY_CSV
            self.state: dict[str, Any] = {}
            self._started = False
            self.clock, self.global_batch, self.replicas = clock, global_batch, replicas
            self._epoch_began, self._training_ended = 0.0, 0.0

        def on_train_batch_begin(self, batch: int, logs: dict | None = None) -> None:
            self.clock.asked()

        def on_test_begin(self, logs: dict | None = None) -> None:
            self._training_ended = self._training_ended or time.perf_counter()  # validation begins

        def _input_figures(self) -> dict[str, float]:
            """The epoch's training images per second per replica (steps x global batch over the time from the
            epoch's start to its last step's end, validation left out) and its input stall in seconds."""
            ended = self._training_ended or time.perf_counter()
            steps, stall = self.clock.epoch(ended)
            seconds = max(ended - self._epoch_began, 1e-9)
            return {"images_per_s_per_replica": steps * self.global_batch / seconds / self.replicas,
                    "input_stall_s": stall}  # fmt: skip

        def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
            self._epoch_began, self._training_ended = time.perf_counter(), 0.0
            if self._started:
                return
            self._started = True
            if epoch > 0 and self.state_path.exists():
                self.state = json.loads(self.state_path.read_text())
                log.info("resuming at epoch %d (best so far: epoch %s)", epoch + 1, self.state["best_epoch"] + 1)
            else:
                self.state = {"best_epoch": -1, "best_loss": math.inf, "wait": 0}
            self._truncate_history(epoch)

        def _truncate_history(self, first_epoch: int) -> None:
            """Keep only rows of epochs before `first_epoch`: later ones were not checkpointed and will be redone."""
            if not self.history_path.exists():
                return
            with self.history_path.open(newline="") as f:
                rows = list(csv.DictReader(f))
            kept = [row for row in rows if int(row["epoch"]) < first_epoch]
            self._write_history(kept, list(rows[0]) if rows else [])

        def _write_history(self, rows: list[dict[str, Any]], fields: list[str]) -> None:
            tmp = self.history_path.with_suffix(".tmp")
            with tmp.open("w", newline="") as f:
                writer = csv.DictWriter(f, fieldnames=fields)
                writer.writeheader()
                writer.writerows(rows)
            tmp.replace(self.history_path)

        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            if logs is not None:  # the same dict goes on to the progress bar, which shows the figures too
                logs.update(self._input_figures())
            logs = {key: float(value) for key, value in (logs or {}).items()}
            rows: list[dict[str, Any]] = []
            if self.history_path.exists():
                with self.history_path.open(newline="") as f:
                    rows = list(csv.DictReader(f))
            rows.append({"epoch": epoch, **logs})
            self._write_history(rows, ["epoch", *sorted(logs)])

            loss = logs.get(self.monitor, math.inf)
            if loss < self.state["best_loss"]:
                self.model.save_weights(self.best_path)
                self.state.update(best_epoch=epoch, best_loss=loss, wait=0)
            else:
                self.state["wait"] += 1
            tmp = self.state_path.with_suffix(".tmp")
            tmp.write_text(json.dumps(self.state))
            tmp.replace(self.state_path)
            if self.state["wait"] >= self.patience:
                log.info("no %s improvement for %d epochs: stopping", self.monitor, self.patience)
                self.model.stop_training = True

    return EpochLedger


def validation_thresholds(
    scores: np.ndarray | None, labels: list[str], classes: list[str]
) -> tuple[dict[str, float] | None, dict[str, Any] | None]:
    """Per-class thresholds fitted on the validation split, and their fit for the provenance; (None, None) where
    none can be fitted (no validation split, or a class named like the unclassified ROIs): plain argmax."""
    if scores is None:
        log.info("no validation split: the bundle decides by plain argmax (no thresholds)")
        return None, None
    if UNCLASSIFIED_NAME in classes:
        log.warning("a class is named %r: the bundle decides by plain argmax (no thresholds)", UNCLASSIFIED_NAME)
        return None, None
    fit = fit_thresholds(scores, labels, classes)
    return fit.pop("thresholds"), {"fitted_on": "validation split", **fit}


def default_checkpoint_dir(out_url: str) -> Path:
    """`<bundle>.ckpt` beside a local bundle; for a remote bundle, a per-URL folder in the user's cache."""
    if "://" not in out_url or out_url.startswith("file://"):
        return Path(out_url.removeprefix("file://") + ".ckpt")
    digest = hashlib.sha256(out_url.encode()).hexdigest()[:16]
    return Path.home() / ".cache" / "ifcbflow" / "checkpoints" / digest


def default_prepared_dir(out_url: str) -> str:
    """`<bundle>.prepared` beside a local bundle; for a remote bundle, a per-URL folder in the user's cache."""
    if "://" not in out_url or out_url.startswith("file://"):
        return out_url.removeprefix("file://") + ".prepared"
    digest = hashlib.sha256(out_url.encode()).hexdigest()[:16]
    return str(Path.home() / ".cache" / "ifcbflow" / "prepared" / digest)


def _claim_checkpoint_dir(directory: Path, run: dict[str, Any]) -> None:
    """Refuse to resume a different run's checkpoints (other data, arch, split or batch) instead of mixing them."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "run.json"
    if path.exists() and json.loads(path.read_text()) != run and (directory / "backup").exists():
        raise ValueError(
            f"checkpoint directory {directory} holds an unfinished run with other settings; "
            "delete it or pass another --checkpoint-dir"
        )
    path.write_text(json.dumps(run, sort_keys=True))


def _scores(bundle: Bundle, prepared: PreparedSet, rows: np.ndarray) -> np.ndarray:
    """float32 (len(rows), classes): the bundle's scores of `rows` (sorted) of the prepared set, shard by shard."""
    from model.inference.predictors import make_predictor

    predictor = make_predictor(bundle)
    batches = ((batch, None) for batch in prepared.iter_batches(rows, SCORE_BATCH))
    scores = [score for score, _ in predictor.run(batches)]
    return np.concatenate(scores) if scores else np.empty((0, len(bundle.classes)), np.float32)


def train(
    prepared: PreparedSet,
    *,
    arch: str = "utopia-b3",
    epochs: int,
    replicas: int | None = None,
    out_url: str,
    storage_options: dict[str, Any] | None = None,
    batch_size: int = 32,
    seed: int = 0,
    val: float = 0.15,
    test: float = 0.15,
    patience: int = 5,
    learning_rate: float = 1e-3,
    augment: bool = True,
    shuffle_buffer: int = SHUFFLE_BUFFER,
    checkpoint_dir: str | Path | None = None,
    verbose: int | str = 2,
) -> Bundle:
    """Train `arch` on a prepared set (grouped split into train/val/test), save the best epoch as a bundle at
    `out_url`, with the set's preprocessing.

    batch_size is per replica (global batch = batch_size x replicas); `shuffle_buffer` is in ROIs. Returns the saved
    bundle; its provenance holds the data source, split, training settings, per-epoch history (with images/s per
    replica and input stall), validation and held-out test metrics, versions. Class names a bundle cannot carry
    are refused (`BundleError`) and a split the groups cannot make (`model.training.data.SplitError`), both before any
    training.
    """
    require_tensorflow_backend()
    classes = prepared.classes
    check_classes(classes)
    all_labels, all_groups = prepared.labels(), prepared.groups()
    labelled = np.flatnonzero(all_labels >= 0)
    parts = split_by_group(all_labels[labelled], all_groups[labelled], val=val, test=test, seed=seed)
    train_rows, val_rows, test_rows = (labelled[part] for part in parts)
    strategy = make_strategy(replicas)  # before other TensorFlow work: logical CPU devices are set before it starts
    import keras
    import tensorflow as tf

    config = prepared.config
    n_replicas = strategy.num_replicas_in_sync
    global_batch = batch_size * n_replicas
    on_gpu = bool(tf.config.list_physical_devices("GPU"))
    keras.utils.set_random_seed(seed)

    log.info(
        "training %s on %d images (%d classes): train %d, val %d, test %d; %d replica(s) x batch %d",
        arch, len(labelled), len(classes), len(train_rows), len(val_rows), len(test_rows), n_replicas, batch_size,
    )  # fmt: skip
    weights = balanced_class_weights(all_labels[train_rows], len(classes))
    clock = InputClock()
    train_ds = make_dataset(
        prepared, train_rows, global_batch, training=True, seed=seed, class_weights=weights, augment=augment,
        shuffle_buffer=shuffle_buffer, on_batch=clock.stamp,
    )  # fmt: skip
    val_ds = make_dataset(prepared, val_rows, global_batch, training=False, seed=seed) if len(val_rows) else None

    ckpt = Path(checkpoint_dir) if checkpoint_dir else default_checkpoint_dir(out_url)
    run = {
        "arch": arch, "classes": classes, "seed": seed, "batch_size": batch_size, "replicas": n_replicas,
        "preprocess": config.to_dict(), "val": val, "test": test, "data": prepared.fingerprint,
    }  # fmt: skip
    _claim_checkpoint_dir(ckpt, run)

    with _dtype_policy("mixed_float16" if on_gpu else "float32"), strategy.scope():
        model = architectures.build(arch, len(classes), config.size)
        model.compile(
            optimizer=keras.optimizers.Adam(learning_rate),
            loss="sparse_categorical_crossentropy",
            weighted_metrics=["accuracy"],
        )
    monitor = "val_loss" if val_ds is not None else "loss"
    ledger = _epoch_ledger_class()(ckpt, monitor, patience, clock, global_batch, n_replicas)
    backup = keras.callbacks.BackupAndRestore(str(ckpt / "backup"), delete_checkpoint=False)
    started = datetime.now(UTC)
    model.fit(
        train_ds,
        validation_data=val_ds,
        epochs=epochs,
        callbacks=[ledger, backup],
        shuffle=False,  # the dataset shuffles itself
        verbose=verbose,
    )
    if ledger.best_path.exists():
        model.load_weights(ledger.best_path)

    # The bundle holds a plain float32, single-device copy: inference decides its own devices and precision.
    with _dtype_policy("float32"):
        final = architectures.build(arch, len(classes), config.size)
    final.set_weights(model.get_weights())
    with (ckpt / HISTORY_CSV).open(newline="") as f:
        history = [{k: int(v) if k == "epoch" else float(v) for k, v in row.items()} for row in csv.DictReader(f)]

    bundle = Bundle(model=final, classes=classes, preprocess=config, arch=arch)
    held_out = {"val": val_rows, "test": test_rows}
    truth = {name: [classes[i] for i in all_labels[rows]] for name, rows in held_out.items()}
    scores = {name: _scores(bundle, prepared, rows) if len(rows) else None for name, rows in held_out.items()}
    metrics = {
        name: evaluate(scores[name], truth[name], classes) if len(rows) else None for name, rows in held_out.items()
    }
    bundle.thresholds, threshold_fit = validation_thresholds(scores["val"], truth["val"], classes)
    names = prepared.group_names()
    counts = np.bincount(all_labels[labelled], minlength=len(classes))
    bundle.provenance = {
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "training_started": started.isoformat(timespec="seconds"),
        "data": {
            "source": prepared.source,
            "prepared": prepared.url,
            "n_images": len(labelled),
            "class_counts": {c: int(n) for c, n in zip(classes, counts, strict=True)},
        },
        "split": {
            "seed": seed, "val_fraction": val, "test_fraction": test,
            "n_train": len(train_rows), "n_val": len(val_rows), "n_test": len(test_rows),
            "val_groups": sorted({names[g] for g in all_groups[val_rows]}),
            "test_groups": sorted({names[g] for g in all_groups[test_rows]}),
        },
        "training": {
            "epochs_requested": epochs, "epochs_run": len(history), "best_epoch": ledger.state["best_epoch"],
            "monitor": monitor, "patience": patience, "batch_size_per_replica": batch_size,
            "global_batch_size": global_batch, "replicas": n_replicas,
            "devices": list(strategy.extended.worker_devices), "mixed_precision": on_gpu,
            "learning_rate": learning_rate, "augmentation": "flip+rot90" if augment else "none",
            "shuffle_buffer": shuffle_buffer,
            "class_weights": {c: float(w) for c, w in zip(classes, weights, strict=True)},
        },
        "history": history,
        "metrics": metrics,
        "thresholds": threshold_fit,
        "versions": installed_versions(),
    }  # fmt: skip
    bundle = twin_if_possible(bundle)  # CPU workers run the twin on ONNX Runtime (model.inference.runtimes)
    save_bundle(bundle, out_url, storage_options)
    for name in ("backup", "best.weights.h5", "ledger.json", "run.json"):
        target = ckpt / name
        if target.is_dir():
            shutil.rmtree(target)
        else:
            target.unlink(missing_ok=True)
    test_metrics = metrics["test"]
    if test_metrics:
        log.info("held-out test: accuracy %.3f, macro F1 %.3f", test_metrics["accuracy"], test_metrics["macro_f1"])
    return bundle
