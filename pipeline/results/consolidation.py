"""Consolidation: the derived tables (the summary, the ledger's partitions, warnings and failures) brought up to the
commits a ledger holds, behind one commit point (the summary group's `consolidated_rows`, written last).

A run that adds k bins appends: the new bins' rows (sorted by time among themselves) to the summary's arrays, its
new partitions and warnings and its new or changed failures to the ledger's, touching only the chunks from the last
row on, without reading the summary's records: O(k) store work and a few dozen requests whatever the store's size.
Crash safety: the new chunks go first, then the arrays' metadata (their shapes), and last the summary group's
attributes with `ROWS`, the rows of each dimension that readers trust, and `DIGESTS`, what those rows hold: a
consolidation killed before that last write leaves the previous counts, so its partitions are still pending and the
next run appends them again over the rows past the counts. Nothing is rewritten in place behind readers but by a
writer that lost its lease after its last check, and what such a writer lands is found by the digests
(`pipeline.results.table_digests`): the tables are then rebuilt from the commits.

The tables are rewritten whole (from every bin record) only where an append cannot say it: with `full`
(`rethreshold` and `migrate`), after a compaction (commits that replace partitions), when a bin already in the
summary was committed again, when the summary's provenance (model, thresholds) is no longer the store's, and when
the summary is of an older layout (without `ROWS`) or absent, when a table to grow lacks one of the arrays its
rows now have (a store of before the bins' sample metadata or the failures' kind) or the commit point its digests or
its count of unmeasured bins (a store of before them): rewritten once, it has them from then on; and when a reader
found the tables torn. A rewrite first sets the counts to zero (readers then take the bins from the commits, all
still there, and count them by the store's thresholds), then writes every key, then the counts, then deletes keys
the new version does not have.
"""

from __future__ import annotations

import functools
import json
import posixpath
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import zarr
from zarr.storage import MemoryStore

from pipeline.faults import with_retries
from pipeline.ifcb.errors import BinFailure
from pipeline.redact import redact_url
from pipeline.results.encoding import as_bytes, group_document, grow_rows, zarr_contents
from pipeline.results.failure_table import COLUMNS, changed_failures
from pipeline.results.layout import DIGESTS, LEDGER, ROWS, SUMMARY, UNMEASURED
from pipeline.results.records import Ledger
from pipeline.results.summary import PROVENANCE, ledger_dataset, summary_dataset
from pipeline.results.table_digests import array_digest, as_text, grown_digest

if TYPE_CHECKING:
    from pipeline.results.store import ResultStore

#: What the last consolidation this process wrote to each store left there, or a ledger read with `remember`: (its
#: summary attributes as canonical JSON, the complete bins, the consolidated partitions, the bins' fingerprints); see
#: `ResultStore._consolidated_ledger`.
CONSOLIDATED: dict[str, tuple[str, frozenset[str], frozenset[str], dict[str, int]]] = {}


def canonical(attributes: dict[str, Any]) -> str:
    """Attributes as JSON independent of key order (as written and as read back)."""
    return json.dumps(attributes, sort_keys=True, default=str)


def consolidate(
    store: ResultStore,
    ledger: Ledger,
    extra_failures: Sequence[BinFailure] = (),
    info: dict[str, Any] | None = None,
    *,
    full: bool = False,
) -> int:
    """Bring the store's `summary` and `ledger` groups up to `ledger` (and failures found by listing); returns the
    bin count. `info`: the root attributes the summary follows (classes, thresholds), when not yet the store's own."""
    info = info or store.info() or {}
    failures = ledger.recorded  # the bead runs left out too
    for failure in extra_failures:
        if failure.bin not in ledger.complete:
            failures[failure.bin] = failure
    appended = None
    if not (full or store.torn or _must_rewrite(ledger, info)):
        appended = with_retries(
            functools.partial(_append, store, ledger, failures, info), f"appending to {redact_url(store.url)}"
        )
    rows, attributes = appended or _rewrite(store, ledger, failures, info)
    store.torn = False
    ledger.consolidated(rows, attributes)
    CONSOLIDATED[store.url] = (
        canonical(attributes),
        frozenset(ledger.complete),
        frozenset(ledger.parts),
        dict(ledger.digests),
    )
    return len(ledger.complete)


def _must_rewrite(ledger: Ledger, info: dict[str, Any]) -> bool:
    """Whether the summary cannot grow by appending (see the module's docstring)."""
    if ledger.rows is None or ledger.recompleted or any(commit.replaces for commit in ledger.pending):
        return True
    if DIGESTS not in ledger.summary_attributes or UNMEASURED not in ledger.summary_attributes:
        return True
    provenance = {key: info[key] for key in PROVENANCE if key in info}
    return any(ledger.summary_attributes.get(key) != value for key, value in provenance.items())


def _rewrite(
    store: ResultStore, ledger: Ledger, failures: dict[str, BinFailure], info: dict[str, Any]
) -> tuple[dict[str, int], dict[str, Any]]:
    records = ledger.bins.values()
    summary = summary_dataset(records, info)
    tables = ledger_dataset(ledger.parts, failures.values(), records)
    rows = {dim: tables.sizes[dim] for dim in ("part", "warned", "failed")} | {"bin": summary.sizes["bin"]}
    summary.attrs[ROWS] = rows
    summary.attrs[UNMEASURED] = sum(1 for record in records if record.biovolume is None)
    documents: dict[str, bytes] = {}
    digests: dict[str, str] = {}
    for group_path, dataset in ((SUMMARY, summary), (LEDGER, tables)):
        contents = zarr_contents(dataset)
        documents.update({f"{group_path}/{key}": as_bytes(value) for key, value in contents.items()})
        encoded = zarr.open_group(MemoryStore(contents), mode="r", zarr_format=3)
        digests.update({f"{group_path}/{name}": as_text(array_digest(array[...])) for name, array in encoded.arrays()})
    head_document = json.loads(documents.pop(f"{SUMMARY}/zarr.json"))
    head_document["attributes"][DIGESTS] = digests
    head = json.dumps(head_document, indent=2, sort_keys=True, allow_nan=False).encode()
    previous = store._summary_attributes()
    if previous is not None:  # readers take the bins from the commits while the arrays change
        emptied = {**previous, ROWS: dict.fromkeys(rows, 0), DIGESTS: {}}
        store.write_documents({f"{SUMMARY}/zarr.json": group_document(emptied)})
    stale = [key for key in _keys_under(store, SUMMARY) + _keys_under(store, LEDGER) if key not in documents]
    store.write_documents(documents)
    store.write_documents({f"{SUMMARY}/zarr.json": head})
    for key in stale:
        if key != f"{SUMMARY}/zarr.json":
            with_retries(lambda key=key: store.fs.rm_file(posixpath.join(store.root, key)), f"removing {key}")
    return rows, json.loads(head)["attributes"]


def _append(
    store: ResultStore, ledger: Ledger, failures: dict[str, BinFailure], info: dict[str, Any]
) -> tuple[dict[str, int], dict[str, Any]] | None:
    """The new rows appended behind the commit point: (rows, summary attributes); None, with nothing written, where a
    table to grow lacks an array of the new rows (then the caller rewrites)."""
    assert ledger.rows is not None
    records = list({record.bin: record for commit in ledger.pending for record in commit.bins}.values())
    added = {
        SUMMARY: summary_dataset(records, info),
        LEDGER: ledger_dataset(ledger.new_parts, (), records).drop_dims("failed"),
    }
    rows = dict(ledger.rows)
    if "failed" in rows:  # the failures that are new or changed, appended
        changed = changed_failures(failures, store._consolidated_failures(ledger.summary_attributes))
    else:  # a table of before, rewritten in place (and counted from now on: never again)
        rows["failed"], changed = 0, list(failures.values())
    added[f"{LEDGER} failed"] = ledger_dataset((), changed)[list(COLUMNS)]
    start = dict(rows)
    growing = []  # (group, its encoded arrays that grow, its stored arrays)
    for name, dataset in added.items():
        group_path = name.split()[0]
        grow = {dim: size for dim, size in dataset.sizes.items() if dim in start}
        if not any(grow.values()):
            continue
        encoded = zarr.open_group(MemoryStore(zarr_contents(dataset)), mode="r", zarr_format=3)
        stored = dict(zarr.open_group(store.zarr_store, path=group_path, mode="r+", zarr_format=3).arrays())
        new = [(array_name, values) for array_name, values in encoded.arrays() if _grows(values, grow)]
        if any(array_name not in stored for array_name, _ in new):
            return None
        growing.append((group_path, new, stored))
    metadata: dict[str, bytes] = {}
    digests = dict(ledger.summary_attributes[DIGESTS])
    for group_path, new, stored in growing:
        for array_name, values in new:
            dims = values.metadata.dimension_names or ()
            name = f"{group_path}/{array_name}"
            metadata[f"{name}/zarr.json"] = grow_rows(stored[array_name], start[dims[0]], values)
            previous = int(digests.get(name, "0"), 16)
            digests[name] = as_text(grown_digest(previous, values[...], start[dims[0]]))
    store.write_documents(metadata)
    sizes = {**added[LEDGER].sizes, **added[f"{LEDGER} failed"].sizes, **added[SUMMARY].sizes}
    rows = {dim: rows[dim] + sizes[dim] for dim in rows}
    attributes = {**ledger.summary_attributes, ROWS: rows, DIGESTS: digests}
    if UNMEASURED in attributes:  # the new rows are new bins (an append adds no bin the summary shows)
        attributes[UNMEASURED] += sum(1 for record in records if record.biovolume is None)
    store.write_documents({f"{SUMMARY}/zarr.json": group_document(attributes)})
    return rows, attributes


def _grows(values: Any, grow: dict[str, int]) -> bool:
    """Whether an encoded array has rows along a dimension that grows."""
    dims = values.metadata.dimension_names or ()
    return bool(dims) and dims[0] in grow


def _keys_under(store: ResultStore, folder: str) -> list[str]:
    path = posixpath.join(store.root, folder)

    def find() -> list[str]:
        try:
            return list(store.fs.find(path, withdirs=False))
        except FileNotFoundError:
            return []

    prefix = store.root.rstrip("/") + "/"
    return [str(name)[len(prefix) :] for name in with_retries(find, f"listing {folder}")]
