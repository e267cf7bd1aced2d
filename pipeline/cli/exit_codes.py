"""The exit codes of `ifcbflow` commands, one meaning each, so batch scripts and schedulers can act on them."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import typer
from rich.console import Console
from rich.markup import escape

from pipeline.redact import redact_text

#: Every selected bin is complete in the store (or the command did what it was asked); bead runs left out by their
#: header are counted, not failed (`pipeline.ifcb.sample`).
OK = 0
#: The run finished, but some bins failed (bad data, recorded in the store; also those not read again because their
#: files are unchanged since they failed) or stayed incomplete (transient faults that outlasted their retries, or lost
#: partitions): the report lists them, and a rerun redoes the incomplete ones.
NOT_COMPLETE = 1
#: Usage or configuration error: bad flags, an empty time window, a missing archive, unknown bins, credentials, the
#: archive's listing or the output store denied or gone, a bundle that cannot run, a GPU the backend cannot see, a
#: store of another model or held by another run. One message; the run stops (what it committed stays, and a rerun
#: once the cause is fixed resumes).
USAGE = 2
#: Stopped by a signal N (SIGTERM, SIGHUP, SIGINT): 128 + N, as shells report it.
SIGNAL_BASE = 128

HELP = (
    "Exit codes: 0 every selected bin complete; 1 some bins failed (bad data, also bins not read again because their "
    "files are unchanged since they failed: --retry-failed) or stayed incomplete (listed; rerun to redo the "
    "incomplete); 2 usage or configuration error (one message; the run stops, a rerun resumes); 128+N stopped by "
    "signal N."
)


@contextlib.contextmanager
def refusals(console: Console) -> Iterator[None]:
    """Errors that mean "this cannot run as asked": one line on stderr and exit code 2, never a traceback.

    Besides this project's own refusals, any fault that `pipeline.faults` calls a configuration fault of the store or
    archive (credentials, the listing or the output store denied, the store gone) ends here too: in this process,
    every object read or written belongs to the archive's listing, the store or the bundle."""
    from model.bundle import BundleError
    from pipeline.faults import ConfigurationError, is_configuration
    from pipeline.job.run import UsageError
    from pipeline.results.lease import StoreBusyError
    from pipeline.results.store import StoreMismatchError

    try:
        yield
    except (UsageError, ConfigurationError, StoreMismatchError, StoreBusyError, BundleError) as err:
        console.print(f"[red]error:[/red] {escape(redact_text(str(err)))}", highlight=False)
        raise typer.Exit(USAGE) from None
    except Exception as err:
        if not is_configuration(err, scope="store"):
            raise
        console.print(f"[red]error:[/red] {type(err).__name__}: {escape(redact_text(str(err)))}", highlight=False)
        raise typer.Exit(USAGE) from None
