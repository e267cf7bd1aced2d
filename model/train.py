"""Training: labelled ROIs in, a verified model bundle out.

Data-parallel over every local GPU with `tf.distribute.MirroredStrategy` (or N logical CPU devices, so laptops and
tests run the same multi-replica code), so it needs Keras' TensorFlow backend. Preprocessing is `model.preprocess`,
the function inference uses, run in a parallel tf.data map; its uint8 images are cached and augmented as uint8
(a quarter of float32's memory) and cast on the device by the model's first layer. A killed run resumes from its
last finished epoch (Keras BackupAndRestore for weights and optimizer; `EpochLedger` for the best epoch,
early-stopping patience and the history CSV). The bundle gets per-class thresholds fitted on the validation split
(`model.thresholds`), with their fit (F1 per class with argmax and with the threshold) in its provenance.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import json
import logging
import math
import shutil
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from model import architectures
from model.bundle import Bundle, check_classes, save_bundle
from model.data import LabelledImages, split_by_group
from model.decision import UNCLASSIFIED_NAME
from model.evaluate import evaluate, label_indices
from model.onnx_export import twin_if_possible
from model.preprocess import PreprocessConfig, preprocess
from model.thresholds import fit_thresholds
from model.versions import installed_versions

log = logging.getLogger(__name__)

HISTORY_CSV = "history.csv"


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


def make_dataset(
    data: LabelledImages,
    classes: list[str],
    config: PreprocessConfig,
    global_batch: int,
    *,
    training: bool,
    seed: int,
    class_weights: np.ndarray | None = None,
    augment: bool = True,
) -> Any:
    """tf.data pipeline of uint8 images: parallel `preprocess` (cached after the first epoch); for training also
    shuffle, flip/rot90 augmentation (when `augment`) and per-sample class weights; batched to the global batch,
    prefetched."""
    import tensorflow as tf

    images = data.images
    size = config.size
    labels = label_indices(data.labels, classes)

    def load(index: np.ndarray) -> np.ndarray:
        return preprocess(images[int(index)], config)

    def to_input(index: tf.Tensor, *rest: tf.Tensor) -> tuple[tf.Tensor, ...]:
        image = tf.numpy_function(load, [index], tf.uint8, stateful=False)
        return (tf.ensure_shape(image, (size, size, 1)), *rest)

    columns: tuple[np.ndarray, ...] = (np.arange(len(images)), labels)
    if class_weights is not None:
        columns = (*columns, class_weights[labels].astype(np.float32))
    ds = tf.data.Dataset.from_tensor_slices(columns)
    ds = ds.map(to_input, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True).cache()
    if training:
        ds = ds.shuffle(len(images), seed=seed, reshuffle_each_iteration=True)
        if augment:
            ds = ds.map(_augment, num_parallel_calls=tf.data.AUTOTUNE)
    # a last partial training batch smaller than the replica count would leave a replica's BatchNorm empty
    ds = ds.batch(global_batch, drop_remainder=training and len(images) >= global_batch)
    return ds.prefetch(tf.data.AUTOTUNE)


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

        Must come before BackupAndRestore in the callback list: an epoch counts as done once the backup is written,
        so a kill in between redoes the epoch and this ledger's rows for it are dropped on resume.
        """

        def __init__(self, directory: Path, monitor: str, patience: int) -> None:
            super().__init__()
            self.directory = directory
            self.monitor = monitor
            self.patience = patience
            self.state_path = directory / "ledger.json"
            self.best_path = directory / "best.weights.h5"
            self.history_path = directory / HISTORY_CSV
            self.state: dict[str, Any] = {}
            self._started = False

        def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
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


def train(
    data: LabelledImages,
    *,
    arch: str = "utopia-b3",
    epochs: int,
    replicas: int | None = None,
    out_url: str,
    storage_options: dict[str, Any] | None = None,
    batch_size: int = 32,
    seed: int = 0,
    preprocess_config: PreprocessConfig | None = None,
    val: float = 0.15,
    test: float = 0.15,
    patience: int = 5,
    learning_rate: float = 1e-3,
    augment: bool = True,
    checkpoint_dir: str | Path | None = None,
    data_source: str = "",
    verbose: int | str = 2,
) -> Bundle:
    """Train `arch` on `data` (grouped split into train/val/test), save the best epoch as a bundle at `out_url`.

    batch_size is per replica (global batch = batch_size x replicas). Returns the saved bundle; its provenance holds
    the data source, split, training settings, per-epoch history, validation and held-out test metrics, versions.
    Class names a bundle cannot carry are refused (`BundleError`) before any training.
    """
    require_tensorflow_backend()
    check_classes(data.classes)
    strategy = make_strategy(replicas)  # before other TensorFlow work: logical CPU devices are set before it starts
    import keras
    import tensorflow as tf

    config = preprocess_config or PreprocessConfig()
    n_replicas = strategy.num_replicas_in_sync
    global_batch = batch_size * n_replicas
    on_gpu = bool(tf.config.list_physical_devices("GPU"))
    keras.utils.set_random_seed(seed)

    train_part, val_part, test_part = split_by_group(data, val=val, test=test, seed=seed)
    classes = data.classes
    log.info(
        "training %s on %d images (%d classes): train %d, val %d, test %d; %d replica(s) x batch %d",
        arch, len(data), len(classes), len(train_part), len(val_part), len(test_part), n_replicas, batch_size,
    )  # fmt: skip
    train_labels = label_indices(train_part.labels, classes)
    weights = balanced_class_weights(train_labels, len(classes))
    train_ds = make_dataset(
        train_part, classes, config, global_batch, training=True, seed=seed, class_weights=weights, augment=augment
    )
    val_ds = make_dataset(val_part, classes, config, global_batch, training=False, seed=seed) if len(val_part) else None

    ckpt = Path(checkpoint_dir) if checkpoint_dir else default_checkpoint_dir(out_url)
    fingerprint = hashlib.sha256("\0".join(f"{i}:{c}" for i, c in zip(data.ids, data.labels, strict=True)).encode())
    run = {
        "arch": arch, "classes": classes, "seed": seed, "batch_size": batch_size, "replicas": n_replicas,
        "preprocess": config.to_dict(), "val": val, "test": test, "data": fingerprint.hexdigest(),
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
    ledger = _epoch_ledger_class()(ckpt, monitor, patience)
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
    held_out = {"val": val_part, "test": test_part}
    scores = {name: bundle.predict(part.images) if len(part) else None for name, part in held_out.items()}
    metrics = {
        name: evaluate(scores[name], part.labels, classes) if len(part) else None for name, part in held_out.items()
    }
    bundle.thresholds, threshold_fit = validation_thresholds(scores["val"], val_part.labels, classes)
    bundle.provenance = {
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "training_started": started.isoformat(timespec="seconds"),
        "data": {
            "source": data_source,
            "n_images": len(data),
            "class_counts": {c: data.labels.count(c) for c in classes},
        },
        "split": {
            "seed": seed, "val_fraction": val, "test_fraction": test,
            "n_train": len(train_part), "n_val": len(val_part), "n_test": len(test_part),
            "val_groups": sorted(set(val_part.groups)), "test_groups": sorted(set(test_part.groups)),
        },
        "training": {
            "epochs_requested": epochs, "epochs_run": len(history), "best_epoch": ledger.state["best_epoch"],
            "monitor": monitor, "patience": patience, "batch_size_per_replica": batch_size,
            "global_batch_size": global_batch, "replicas": n_replicas,
            "devices": list(strategy.extended.worker_devices), "mixed_precision": on_gpu,
            "learning_rate": learning_rate, "augmentation": "flip+rot90" if augment else "none",
            "class_weights": {c: float(w) for c, w in zip(classes, weights, strict=True)},
        },
        "history": history,
        "metrics": metrics,
        "thresholds": threshold_fit,
        "versions": installed_versions(),
    }  # fmt: skip
    bundle = twin_if_possible(bundle)  # CPU workers run the twin on ONNX Runtime (model.runtimes)
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
