"""The `ifcbflow` command: one Typer app, and the one place where every command is registered."""

from __future__ import annotations

import typer

from pipeline.cli import archive, classify, cluster, exit_codes, model, results, watch
from pipeline.cli.logs import configure_logging

app = typer.Typer(
    name="ifcbflow",
    help="Classify IFCB archives in object storage with a CNN, distributed with Dask.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,  # locals may hold credentials from --storage-options
)
model_app = typer.Typer(
    help="Model bundles: import a Keras 3 or Keras 2 model, refit thresholds, show a bundle, list architectures."
)


@app.callback()
def _main(
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log debug messages (and TensorFlow's own)."),
) -> None:
    configure_logging(verbose)


# In the order of a user's day: look at an archive, train, classify, get results out, run on a cluster.
app.command("ls")(archive.ls)
app.command("extract")(archive.extract)
app.command("synth")(archive.synth)
app.command("train", epilog=model.THRESHOLD_RULE)(model.train_command)
app.command("evaluate")(model.evaluate_command)
app.add_typer(model_app, name="model")
model_app.command("import")(model.import_command)
model_app.command("thresholds", epilog=model.THRESHOLD_RULE)(model.thresholds_command)
model_app.command("info")(model.info_command)
model_app.command("export")(model.export_command)
model_app.command("archs")(model.archs_command)
app.command("classify", epilog=exit_codes.HELP)(classify.classify)
app.command("watch", epilog=watch.HELP)(watch.watch)
app.command("report")(results.report)
app.command("export")(results.export)
app.command("compare")(results.compare)
app.command("rethreshold")(results.rethreshold)
app.command("compact")(results.compact)
app.command("migrate")(results.migrate)
app.command("cluster")(cluster.cluster)
app.command("tls-certs")(cluster.tls_certs)
app.command("worker")(cluster.worker)


def main() -> None:
    app()
