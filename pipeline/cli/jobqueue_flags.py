"""The batch-job flags of `classify` and `cluster`, built from `JobqueueSettings` (where they are declared once).

`with_jobqueue_flags(command)` adds one Typer option per settings field to a command's signature, in their own help
panel, and hands the command one `JobqueueSettings` as its `jobqueue` argument instead of sixteen values.
"""

from __future__ import annotations

import functools
import inspect
import typing
from collections.abc import Callable
from dataclasses import MISSING, fields
from typing import Annotated, Any

import typer

from pipeline.cluster.jobqueue import JobqueueSettings

PANEL = "Batch jobs (--cluster slurm|pbs)"
#: Repeatable flags (list fields): Typer gives None, not [], when they are not used.
_REPEATED = {setting.name for setting in fields(JobqueueSettings) if setting.default is MISSING}


def _parameters() -> list[inspect.Parameter]:
    """One keyword parameter per settings field, annotated with its Typer option."""
    hints = typing.get_type_hints(JobqueueSettings)
    parameters = []
    for setting in fields(JobqueueSettings):
        meta = setting.metadata
        option = typer.Option(meta["flag"], help=meta["help"], min=meta["min"], rich_help_panel=PANEL)
        repeated = setting.name in _REPEATED
        annotation = list[str] | None if repeated else hints[setting.name]
        parameters.append(
            inspect.Parameter(
                setting.name,
                inspect.Parameter.KEYWORD_ONLY,
                default=None if repeated else setting.default,
                annotation=Annotated[annotation, option],
            )
        )
    return parameters


def with_jobqueue_flags(command: Callable[..., Any]) -> Callable[..., Any]:
    """Give a Typer command the batch-job flags; it receives them as one `jobqueue: JobqueueSettings` argument."""
    signature = inspect.signature(command, eval_str=True)
    own = [p for p in signature.parameters.values() if p.name != "jobqueue"]
    added = _parameters()

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        values = {p.name: kwargs.pop(p.name) for p in added}
        values.update({name: values[name] or [] for name in _REPEATED})
        return command(*args, jobqueue=JobqueueSettings(**values), **kwargs)

    del wrapper.__wrapped__  # Typer must read the new signature below, not the command's own
    wrapper.__signature__ = signature.replace(parameters=[*own, *added])  # type: ignore[attr-defined]
    wrapper.__annotations__ = {p.name: p.annotation for p in [*own, *added]}
    return wrapper
