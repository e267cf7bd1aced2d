"""The output store's layout: its version, its folders, the commit point of its derived tables, and the errors of
a folder that is not a store of this layout (the whole picture: `pipeline.results.store`)."""

from __future__ import annotations

LAYOUT = "ifcbflow-store/2"
OLD_LAYOUTS = ("ifcbflow-store/1",)
PARTS, COMMITS, SUMMARY, LEDGER, LEASE = "parts", "commits", "summary", "ledger", "lease.json"
#: Root attribute present while a change of thresholds is being applied (removed by the root write that ends it).
PENDING_DECISION = "thresholds_pending"
#: Attribute of the summary group: the rows of the summary (`bin`) and of the ledger (`part`, `warned`, `failed`)
#: that the last consolidation finished; readers take these rows and no more (written last: the commit point of
#: every derived table).
ROWS = "consolidated_rows"
#: Attribute of the summary group beside `ROWS`: per array of the summary and the ledger ("summary/counts"), the
#: digest of the rows `ROWS` counts (`pipeline.results.table_digests`): what readers check before they trust a table.
DIGESTS = "consolidated_digests"
#: Attribute of the summary group beside `ROWS`: how many of those rows' bins were not measured (no biovolume: bins
#: classified before the store measured). A run that measures reads the bin records to find them only when this is
#: not 0 (or not known: a summary of before it).
UNMEASURED = "bins_unmeasured"


class StoreMismatchError(RuntimeError):
    """The store holds results of another model (or is not an ifcbflow store): never mix two models' results."""


class StoreLayoutError(StoreMismatchError):
    """The store was written by an earlier ifcbflow in another layout; `ifcbflow migrate` converts it."""
