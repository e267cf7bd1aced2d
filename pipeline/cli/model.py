"""CLI of the model area: `train`, `evaluate`, and the `model import|info|archs` group.

Model code lives in `model/`; this module only turns flags into calls and results into text or JSON.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from model.training import thresholds as threshold_rule
from pipeline.cli.exit_codes import USAGE
from pipeline.cli.options import STORAGE_OPTIONS_HELP, parse_storage_options

console = Console(soft_wrap=True)  # long result lines stay whole in logs and pipes

#: The decision rule and how thresholds are fitted (the module's docstring, one line per paragraph so the terminal
#: wraps it), for the help of the commands that fit them.
THRESHOLD_RULE = "\n\n".join(" ".join(part.split()) for part in (threshold_rule.__doc__ or "").split("\n\n"))

LABELS_HELP = "Labels CSV (roi_id,class) for an IFCB archive DATA; without it DATA is a folder of class subfolders."


def _fail(message: str) -> typer.Exit:
    """Print the refusal and end with exit code 2: a model, labels or data the command cannot use is a usage or
    configuration error, as for `classify` (`pipeline.cli.exit_codes`)."""
    console.print(f"[red]error:[/red] {message}", highlight=False)
    return typer.Exit(code=USAGE)


def _load_labelled(data: str, labels: str | None, storage_options: dict[str, Any]) -> Any:
    """Labelled images from class folders, or from an archive's bins plus a labels CSV; bad input ends the command
    with its message (IfcbFormatError is a ValueError) rather than a traceback."""
    from model.training.data import load_image_folder
    from pipeline.ifcb.identifiers import roi_group
    from pipeline.ifcb.labelled import labelled_images_from_archive

    try:
        if labels:
            return labelled_images_from_archive(data, labels, storage_options)
        return load_image_folder(data, storage_options, group_of=roi_group)
    except (FileNotFoundError, ValueError) as err:
        raise _fail(str(err)) from None


PREPARED_HELP = (
    "Where the prepared training set (the preprocessed model inputs, labels and bins of DATA, sharded in a zarr "
    "store) is written, and reused by later runs: a path or fsspec URL. Default: beside a local --out "
    "(`<out>.prepared`), or in ~/.cache/ifcbflow/prepared for a remote one. It is reused, reading nothing from the "
    "archive or the class folders, when it was made from the same DATA, --labels (and the labels file's version) "
    "and --image-size; a set made from others is refused, never overwritten. Edits of the images themselves are not "
    "noticed: delete the folder to prepare again. DATA may also be a prepared set itself."
)


def _prepared_set(
    data: str, labels: str | None, prepared_url: str, image_size: int | None, val: float, test: float,
    threads: int | None, options: dict[str, Any],
) -> Any:
    """The prepared set to train on: DATA itself when it is one, the matching set at `prepared_url`, or one prepared
    there now from DATA; its classes and bins are checked before it is prepared (or used). Bad input exits 2."""
    from model.bundle import BundleError, check_classes
    from model.preprocess import PreprocessConfig
    from model.training.data import SplitError, check_splittable, image_folder_source
    from model.training.prepared import PreparedSet, key_of, open_matching, prepare, read_attributes
    from pipeline.ifcb.identifiers import roi_group
    from pipeline.ifcb.labelled import labelled_archive_source, labels_stamp

    try:
        if read_attributes(data, options) is not None:
            found = PreparedSet(data, options)
            if image_size is not None and image_size != found.config.size:
                raise _fail(f"{data} is a prepared set of size {found.config.size}, not --image-size {image_size}")
        else:
            config = PreprocessConfig(size=image_size or 128)
            name = f"{data} (labels {labels})" if labels else data
            key = key_of(name, labels_stamp(labels, options) if labels else "", config)
            found = open_matching(prepared_url, key, options)
        if found is not None:
            check_classes(found.classes)
            check_splittable(int(found.attributes["n_groups"]), val, test)
            console.print(f"training on the prepared set at {found.url} ({len(found)} ROIs)", highlight=False)
            return found
        if labels:
            source = labelled_archive_source(data, labels, options)
        else:
            source = image_folder_source(data, options, group_of=roi_group)
        check_classes(source.classes)  # before the images are read, let alone hours of training
        check_splittable(len(source.units), val, test)
        return prepare(source, prepared_url, config, storage_options=options, workers=threads)
    except (BundleError, SplitError) as err:
        raise _fail(str(err)) from None
    except (FileNotFoundError, ValueError) as err:  # IfcbFormatError and PreparedSetError are ValueErrors
        raise _fail(str(err)) from None


def train_command(
    data: str = typer.Argument(
        ..., help="Folder of class subfolders of images, an archive URL (with --labels), or a prepared set."
    ),
    labels: str | None = typer.Option(None, "--labels", help=LABELS_HELP),
    out: str = typer.Option(..., "--out", help="Where to write the model bundle (path or fsspec URL)."),
    prepared: str | None = typer.Option(None, "--prepared", help=PREPARED_HELP),
    arch: str = typer.Option("utopia-b3", "--arch", help="Architecture name (see `ifcbflow model archs`)."),
    epochs: int = typer.Option(30, "--epochs", min=1, help="Most epochs to train (early stopping may end sooner)."),
    replicas: int | None = typer.Option(
        None, "--replicas", min=1, help="Data-parallel replicas: GPUs to use (default all), or logical CPU devices."
    ),
    batch_size: int = typer.Option(32, "--batch-size", min=1, help="Batch size per replica."),
    seed: int = typer.Option(0, "--seed", help="Seed of the split, initial weights and shuffling."),
    image_size: int | None = typer.Option(
        None, "--image-size", min=8, help="Model input size (preprocessing long side); default 128, or a prepared "
        "set's size."
    ),
    patience: int = typer.Option(5, "--patience", min=1, help="Epochs without validation improvement before stopping."),
    val: float = typer.Option(0.15, "--val", min=0.0, max=0.9, help="Fraction of bins held out for validation."),
    test: float = typer.Option(0.15, "--test", min=0.0, max=0.9, help="Fraction of bins held out for the final test."),
    learning_rate: float = typer.Option(1e-3, "--learning-rate", help="Adam learning rate."),
    augment: bool = typer.Option(True, "--augment/--no-augment", help="Random flips and quarter turns."),
    shuffle_buffer: int = typer.Option(
        8192, "--shuffle-buffer", min=1, help="ROIs in the training shuffle buffer (with --image-size 128, 16 KiB "
        "each): with the shards read four at a time in a random order, it bounds training's memory."
    ),
    prepare_threads: int | None = typer.Option(
        None, "--prepare-threads", min=1, help="Threads preparing the set (default: cores + 4, at most 32)."
    ),
    checkpoint_dir: str | None = typer.Option(
        None, "--checkpoint-dir", help="Local folder for per-epoch checkpoints (default: beside --out, or a cache)."
    ),
    storage_options: str | None = typer.Option(None, "--storage-options", help=STORAGE_OPTIONS_HELP),
) -> None:
    """Train a CNN on labelled ROIs and write a model bundle; rerun the same command to resume after a kill.

    The labelled ROIs are first prepared once (read in parallel, each bin's files once, preprocessed into a sharded
    store: --prepared); training streams from that store with bounded memory, and later runs with the same data and
    --image-size reuse it. The split by bin needs at least one bin per held-out part plus one for training. The
    bundle gets per-class thresholds fitted on the validation split (see below); each epoch's images/s per replica
    and input stall (seconds waited for batches) are in its history.
    """
    from model.training.data import SplitError
    from model.training.train import default_prepared_dir, require_tensorflow_backend, train

    try:
        require_tensorflow_backend()  # before the data is loaded
    except RuntimeError as err:
        raise _fail(str(err)) from None
    options = parse_storage_options(storage_options)
    prepared_url = prepared or default_prepared_dir(out)
    dataset = _prepared_set(data, labels, prepared_url, image_size, val, test, prepare_threads, options)
    try:
        bundle = train(
            dataset,
            arch=arch,
            epochs=epochs,
            replicas=replicas,
            out_url=out,
            storage_options=options,
            batch_size=batch_size,
            seed=seed,
            val=val,
            test=test,
            patience=patience,
            learning_rate=learning_rate,
            augment=augment,
            shuffle_buffer=shuffle_buffer,
            checkpoint_dir=checkpoint_dir,
        )
    except SplitError as err:
        raise _fail(str(err)) from None
    test_metrics = bundle.provenance["metrics"]["test"]
    summary = f"wrote {out} (hash {bundle.content_hash[:12]})"
    if test_metrics:
        summary += f"; held-out test accuracy {test_metrics['accuracy']:.3f}, macro F1 {test_metrics['macro_f1']:.3f}"
    console.print(summary, highlight=False)
    if bundle.thresholds is not None:
        console.print(_thresholds_table(bundle.classes, bundle.thresholds, bundle.provenance["thresholds"]))


def thresholds_command(
    bundle_url: str = typer.Argument(..., metavar="BUNDLE", help="Model bundle path or URL."),
    data: str = typer.Argument(
        ..., metavar="LABELLED", help="Folder of class subfolders of images, or an archive URL (with --labels)."
    ),
    labels: str | None = typer.Option(None, "--labels", help=LABELS_HELP),
    out: str = typer.Option(..., "--out", help="Where to write the new bundle: the same model, these thresholds."),
    batch_size: int = typer.Option(256, "--batch-size", min=1, help="Images per model call."),
    storage_options: str | None = typer.Option(None, "--storage-options", help=STORAGE_OPTIONS_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print the fit as JSON."),
) -> None:
    """Refit a bundle's per-class thresholds on your labelled ROIs and write a new bundle with the same model.

    The new bundle has another content hash but the same model: it classifies into the same stores, and
    `ifcbflow rethreshold STORE --thresholds NEW.zip` applies its thresholds to a store's scores without the model.
    """
    from model.bundle import BundleError, save_with_thresholds
    from model.inference.load import load_bundle
    from model.inference.predictors import predict
    from model.training.thresholds import fit_thresholds

    options = parse_storage_options(storage_options)
    try:
        bundle = load_bundle(bundle_url, options)
    except BundleError as err:
        raise _fail(str(err)) from None
    dataset = _load_labelled(data, labels, options)
    try:
        fit = fit_thresholds(predict(bundle, dataset.images, batch_size=batch_size), dataset.labels, bundle.classes)
        thresholds = fit.pop("thresholds")
        record = {"fitted_on": data if not labels else f"{data} (labels {labels})", "bundle": bundle.content_hash,
                  "previous": bundle.thresholds, **fit}  # fmt: skip
        digest = save_with_thresholds(bundle_url, out, thresholds, record, options)
    except (BundleError, ValueError) as err:  # labels that are not classes of the model, a class named unclassified
        raise _fail(str(err)) from None
    if as_json:
        print(json.dumps({"bundle": out, "content_hash": digest, "thresholds": thresholds, **record}, indent=2))
        return
    console.print(_thresholds_table(bundle.classes, thresholds, record))
    console.print(f"wrote {out} (hash {digest[:12]}): {bundle.arch}, the model of {bundle_url}", highlight=False)


def evaluate_command(
    bundle_url: str = typer.Argument(..., metavar="BUNDLE", help="Model bundle path or URL."),
    data: str = typer.Argument(..., help="Folder of class subfolders of images, or an archive URL (with --labels)."),
    labels: str | None = typer.Option(None, "--labels", help=LABELS_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print the full report as JSON."),
    out: Path | None = typer.Option(None, "--out", help="Folder for report.json, confusion_matrix.csv and .png."),
    batch_size: int = typer.Option(256, "--batch-size", min=1, help="Images per model call."),
    storage_options: str | None = typer.Option(None, "--storage-options", help=STORAGE_OPTIONS_HELP),
) -> None:
    """Evaluate a bundle on labelled ROIs: accuracy, per-class precision/recall/F1, confusion matrix, top-k."""
    from model.bundle import BundleError
    from model.inference.load import load_bundle
    from model.inference.predictors import predict
    from model.training.evaluate import evaluate, write_confusion

    options = parse_storage_options(storage_options)
    try:
        bundle = load_bundle(bundle_url, options)
    except BundleError as err:
        raise _fail(str(err)) from None
    dataset = _load_labelled(data, labels, options)
    try:
        report = evaluate(predict(bundle, dataset.images, batch_size=batch_size), dataset.labels, bundle.classes)
    except ValueError as err:
        raise _fail(str(err)) from None
    report["bundle"] = {"url": bundle_url, "content_hash": bundle.content_hash, "arch": bundle.arch}
    if out is not None:
        write_confusion(report, out)
        (out / "report.json").write_text(json.dumps(report, indent=2))
    if as_json:
        print(json.dumps(report, indent=2))
        return
    table = Table(title=f"{bundle_url}: {report['n']} images")
    for column in ("class", "precision", "recall", "F1", "support"):
        table.add_column(column, justify="left" if column == "class" else "right")
    for name, row in report["per_class"].items():
        table.add_row(name, f"{row['precision']:.3f}", f"{row['recall']:.3f}", f"{row['f1']:.3f}", str(row["support"]))
    console.print(table)
    top_k = ", ".join(f"top-{k} {value:.3f}" for k, value in report["top_k"].items())
    console.print(
        f"accuracy {report['accuracy']:.3f}, macro F1 {report['macro_f1']:.3f}, "
        f"weighted F1 {report['weighted_f1']:.3f}; {top_k}",
        highlight=False,
    )


def _floats(text: str | None, flag: str) -> tuple[float, ...] | None:
    if text is None:
        return None
    try:
        return tuple(float(value) for value in text.split(","))
    except ValueError:
        raise typer.BadParameter(f"expected comma-separated numbers, got {text!r}", param_hint=flag) from None


def import_command(
    model_file: str = typer.Argument(
        ...,
        metavar="MODEL",
        help="An ONNX model (.onnx), a Keras 3 native .keras file, or a Keras 2 `model.to_json()` file (ARCH.json).",
    ),
    weights: str | None = typer.Argument(
        None, metavar="WEIGHTS.h5", help="The Keras 2 `model.save_weights()` HDF5 file that goes with ARCH.json."
    ),
    out: str = typer.Option(..., "--out", help="Where to write the model bundle (path or fsspec URL)."),
    classes: str | None = typer.Option(None, "--classes", help="Class names in output order, comma-separated."),
    classes_file: str | None = typer.Option(None, "--classes-file", help="File with one class name per line."),
    preprocess: str | None = typer.Option(
        None,
        "--preprocess",
        help="The contract the model was trained with: utopia (default for Keras), whoi "
        "(WHOI ifcb-inference) or smhi (SMHI ifcb-pytorch-classify); required for ONNX. The options below change "
        "one part of it.",
    ),
    size: int | None = typer.Option(None, "--size", min=1, help="Input size (default: the model's)."),
    resize: str | None = typer.Option(None, "--resize", help="fit (aspect kept, padded), square or stretch."),
    interpolation: str | None = typer.Option(None, "--interpolation", help="bilinear or bicubic."),
    method: str | None = typer.Option(None, "--method", help="opencv (no antialiasing) or pillow (antialiased)."),
    pad: str | None = typer.Option(None, "--pad", help="constant (--pad-value) or corners (mean of the corners)."),
    pad_value: int | None = typer.Option(None, "--pad-value", min=0, max=255, help="Grey level of constant padding."),
    precision: str | None = typer.Option(None, "--precision", help="uint8 or float32: pixels resized in."),
    normalisation: str | None = typer.Option(None, "--normalisation", help="minmax (ifcbUTOPIA) or none."),
    channels: int | None = typer.Option(None, "--channels", help="1 or 3 (copies of the grey)."),
    layout: str | None = typer.Option(None, "--layout", help="last (NHWC) or first (NCHW)."),
    scale: str | None = typer.Option(None, "--scale", help="none (0..255) or unit (divided by 255)."),
    mean: str | None = typer.Option(None, "--mean", help="Per-channel mean subtracted after scaling: one or 3 values."),
    std: str | None = typer.Option(None, "--std", help="Per-channel standard deviation divided by: one or 3 values."),
    softmax: bool = typer.Option(False, "--softmax", help="ONNX: the model outputs logits; add a softmax."),
    embedding: str | None = typer.Option(
        None,
        "--embedding",
        help="ONNX: the tensor to store with `classify --embeddings` (default: the input of "
        "the last fully connected layer).",
    ),
    storage_options: str | None = typer.Option(None, "--storage-options", help=STORAGE_OPTIONS_HELP),
) -> None:
    """Turn a model into a bundle: MODEL.onnx, MODEL.keras (Keras 3), or ARCH.json WEIGHTS.h5 (Keras 2, e.g.
    ifcbUTOPIA's), with the preprocessing contract it was trained with.

    The input size comes from the model unless --size says otherwise; a contract whose size or channels do not fit
    the model's input is refused, naming both. Keras models take uint8 grey levels (a float input gets a cast).
    """
    import fsspec

    from model.bundle import BundleError, save_bundle
    from model.convert.from_keras2 import Keras2ImportError, import_keras2
    from model.convert.from_keras3 import import_keras3
    from model.convert.from_onnx import import_onnx
    from model.convert.to_onnx import twin_if_possible
    from model.preprocess import preset

    options = parse_storage_options(storage_options)
    if (classes is None) == (classes_file is None):
        raise typer.BadParameter("give exactly one of --classes and --classes-file")
    if weights is None and model_file.lower().endswith(".json"):
        raise typer.BadParameter("a Keras 2 ARCH.json needs its WEIGHTS.h5 as the second argument")
    onnx = model_file.lower().endswith(".onnx")
    if onnx and preprocess is None:
        raise typer.BadParameter("an ONNX model needs its contract: --preprocess utopia|whoi|smhi")
    if not onnx and (softmax or embedding):
        raise typer.BadParameter("--softmax and --embedding apply to ONNX models")
    if classes_file is not None:
        with fsspec.open(classes_file, "rt", **options) as f:
            names = [line.strip() for line in f if line.strip()]
    else:
        names = [name.strip() for name in (classes or "").split(",") if name.strip()]
    parts = {
        "size": size, "resize": resize, "interpolation": interpolation, "method": method, "pad": pad,
        "pad_value": pad_value, "precision": precision, "normalisation": normalisation, "channels": channels,
        "layout": layout, "scale": scale, "mean": _floats(mean, "--mean"), "std": _floats(std, "--std"),
    }  # fmt: skip
    try:
        config = preset(preprocess or "utopia", **{key: value for key, value in parts.items() if value is not None})
        common = {"preprocess_config": config, "size_from_model": size is None, "storage_options": options}
        if onnx:
            bundle = import_onnx(model_file, names, softmax=softmax, embedding=embedding, **common)
        elif weights is None:
            bundle = import_keras3(model_file, names, **common)
        else:
            bundle = import_keras2(model_file, weights, names, **common)
        if not onnx:  # CPU workers run the twin on ONNX Runtime (model.inference.runtimes)
            bundle = twin_if_possible(bundle)
        digest = save_bundle(bundle, out, options)
    except (Keras2ImportError, BundleError, ValueError) as err:
        raise _fail(str(err)) from None
    console.print(f"wrote {out}: {bundle.arch}, {len(names)} classes, hash {digest[:12]}", highlight=False)


def export_command(
    bundle_url: str = typer.Argument(..., metavar="BUNDLE", help="A Keras model bundle (path or URL)."),
    out: str = typer.Option(..., "--out", help="Where to write the new bundle (path or fsspec URL)."),
    onnx: bool = typer.Option(False, "--onnx", help="An ONNX bundle: the model converted, for nodes without Keras."),
    add_onnx: bool = typer.Option(
        False, "--add-onnx", help="The Keras bundle with its ONNX conversion added (its ONNX twin), which CPU workers "
        "run on ONNX Runtime: the same model to an output store."
    ),
    storage_options: str | None = typer.Option(None, "--storage-options", help=STORAGE_OPTIONS_HELP),
) -> None:
    """Convert the bundle's Keras model to ONNX, for ONNX Runtime: faster than TensorFlow to start and to run on CPU.

    --add-onnx keeps the Keras model and adds the conversion (bundles from `train` and `model import` have it
    already): results go to the same store. --onnx writes an ONNX bundle: another model file, so another hash and
    another store. Same classes, preprocessing and thresholds; refused unless the conversion gives the same scores
    (1e-4) on random inputs.
    """
    from model.bundle import BundleError, save_bundle, save_with_twin
    from model.convert.to_onnx import exported_bundle, onnx_twin
    from model.inference.load import load_bundle

    if onnx == add_onnx:
        raise typer.BadParameter("say which: --onnx (an ONNX bundle) or --add-onnx (an ONNX twin)", param_hint="--onnx")
    options = parse_storage_options(storage_options)
    try:
        source = load_bundle(bundle_url, options)
        if onnx:
            bundle = exported_bundle(source)
            digest = save_bundle(bundle, out, options)
            made, what = bundle.provenance["exported_from"], bundle.arch
        else:
            twin, made = onnx_twin(source)
            digest = save_with_twin(bundle_url, out, twin, made, options)
            what = f"{source.arch} with its ONNX twin"
    except BundleError as err:
        raise _fail(str(err)) from None
    console.print(f"wrote {out}: {what}, hash {digest[:12]}; scores within {made['max_score_difference']:.1g} of "
                  f"{bundle_url}", highlight=False)  # fmt: skip


def info_command(
    bundle_url: str = typer.Argument(..., metavar="BUNDLE", help="Model bundle path or URL."),
    as_json: bool = typer.Option(False, "--json", help="Print the bundle's metadata as JSON."),
    storage_options: str | None = typer.Option(None, "--storage-options", help=STORAGE_OPTIONS_HELP),
) -> None:
    """Show a bundle's classes, architecture, preprocessing, provenance and hash (without loading the model)."""
    from model.bundle import BundleError, read_bundle_info

    try:
        info = read_bundle_info(bundle_url, parse_storage_options(storage_options))
    except BundleError as err:
        raise _fail(str(err)) from None
    if as_json:
        print(json.dumps(info, indent=2))
        return
    provenance = info["provenance"]
    console.print(f"[bold]{bundle_url}[/bold]", highlight=False)
    console.print(f"  hash:        {info['content_hash']}", highlight=False)
    console.print(f"  arch:        {info['arch']}", highlight=False)
    console.print(f"  runtime:     {info.get('runtime', 'keras')}", highlight=False)
    console.print(f"  classes:     {', '.join(info['classes'])}", highlight=False)
    console.print(f"  preprocess:  {info['preprocess']}", highlight=False)
    console.print(f"  created:     {provenance.get('created', '?')}", highlight=False)
    test_metrics = (provenance.get("metrics") or {}).get("test")
    if test_metrics:
        console.print(
            f"  test:        accuracy {test_metrics['accuracy']:.3f}, macro F1 {test_metrics['macro_f1']:.3f} "
            f"(n={test_metrics['n']})",
            highlight=False,
        )
    if "imported_from" in provenance:
        console.print(f"  imported:    {provenance['imported_from']}", highlight=False)
    if info.get("thresholds") is None:
        console.print("  decision:    argmax (no thresholds)", highlight=False)
    else:
        console.print(_thresholds_table(info["classes"], info["thresholds"], provenance.get("thresholds")))


def _thresholds_table(classes: list[str], thresholds: dict[str, float], fit: dict[str, Any] | None) -> Table:
    """Each class's threshold (in class order) and, where the fit is known, its F1 with argmax and with it."""
    per_class = (fit or {}).get("per_class", {})
    where = f" fitted on {fit['fitted_on']} ({fit['n']} ROIs, {fit['unclassified']} left unclassified)" if fit else ""
    table = Table(title=f"thresholds{where}")
    for column in ("class", "threshold", "F1 argmax", "F1 thresholded", "support"):
        table.add_column(column, justify="left" if column == "class" else "right")
    notes = []
    for name in classes:
        row = per_class.get(name)
        cells = ("", "", "") if row is None else (f"{row['f1_argmax']:.3f}", f"{row['f1']:.3f}", str(row["support"]))
        table.add_row(name, f"{thresholds[name]:.3f}", *cells)
        if row is not None and row["note"]:
            notes.append(f"{name}: {row['note']}")
    table.caption = "\n".join(notes) or None
    return table


def archs_command() -> None:
    """List the architectures `train --arch` accepts."""
    from model.architectures import names

    for name in names():
        print(name)
