"""The output store: one zarr v3 hierarchy per model, local or in object storage; the store is the job's ledger.

Layout (every node is plain zarr v3, so `zarr`, `xarray` and other readers open it)::

    STORE/zarr.json              root attributes: layout, classes (ordered), model_hash (the store's identity),
                                 bundle_hash, bundle_arch, bundle_url, archive_urls (credentials redacted), versions;
                                 the decision: thresholds (absent: argmax), thresholds_sha256, thresholds_source,
                                 decisions (each change `rethreshold` made), thresholds_pending (during a change);
                                 embeddings (true when every partition holds them; absent in stores made before
                                 they existed: false); morphology (stores that measure: the calibration in pixels per
                                 µm by instrument, the diatom classes: `pipeline.results.biomass.Sizing`)
    STORE/parts/<part>/          one group per committed partition (one attempt of a planned partition: `attempt_id`):
                                 its bins' ROIs, contiguous, in bin order
        scores     (roi, class)  float32 class scores
        embeddings (roi, feature) float16 penultimate-layer features (stores made with `classify --embeddings`)
        morphology (roi, morphology_feature) float32 v4 features in pixels, named by its attribute `features`
                                 (stores that measure: `classify --morphology`; NaN rows: bins not measured)
        roi_number (roi)         ROI numbers (1-based .adc rows)
        bin        (roi)         the bin of each ROI
        time       (roi)         the bin's sample time (UTC)
    STORE/commits/<part>/        the partition's commit: a group whose attributes list its bins (time, n_rois,
                                 ml_analyzed, counts, counts_thresholded, roi_offset, files_digest, the sample's
                                 run_type, sample_type, latitude, longitude, bead_run), failed bins (and bead runs
                                 left out: kind "beads") and incomplete bins, and the thresholds its counts follow.
                                 Written LAST, once.
    STORE/summary/               bin x class, grown by the client after each run by the bins it added (rows in append
                                 order: sorted by time within each run, not across runs; `open_summary` sorts): counts,
                                 concentration (per mL), ml_analyzed, n_rois, time, where each bin's ROIs are (part,
                                 roi_offset), the fingerprint of the files they were read from (files_digest:
                                 `records.files_digest`, 0 where unknown) and what the header says of the sample
                                 (run_type, sample_type: "" where it does not say; latitude, longitude: NaN where
                                 there is no position; bead_run); with a bundle's thresholds also
                                 counts_thresholded, concentration_thresholded (bin x class_thresholded: the classes,
                                 then `unclassified`); in stores that measure, biovolume (um3) and biovolume_per_ml,
                                 and with a class-to-taxon table carbon (pg) and carbon_per_ml (bin x class, argmax;
                                 NaN for bins not measured). Arrays in chunks of 65536 rows (bin x class: 4096).
                                 Its attribute `consolidated_rows` ({bin, part, warned, failed}: rows of this group
                                 and of the ledger's) is written last and counts the rows readers take (arrays may
                                 hold more rows, of a cut-off consolidation), with `consolidated_digests`
                                 ({"summary/counts": 16 hex digits, ...}: a digest of each array's counted rows,
                                 checked by every reader) and `bins_unmeasured` (how many of those bins have no
                                 biovolume: `layout.UNMEASURED`)
    STORE/ledger/                the client's bookkeeping: partitions already in the summary (consolidated_part, in
                                 append order); failed bins (stage, reason, versions of their files, kind: "beads"
                                 for a bead run left out, which is no failure), appended like the summary (a bin's
                                 later row over its earlier ones; rows of bins complete since are no failures);
                                 warnings of complete bins (warned_bin, warning)
    STORE/lease.json             held by the run that writes the store now (owner, host, pid, expiry)

Scores are stored raw; counts are stored both by argmax and, when the store decides by per-class thresholds
(recorded in the root attributes as `thresholds`: the first bundle's, or those `rethreshold` applied since), by its
thresholds; each commit names them by `thresholds_sha256`. Both sets of counts travel in the commit document that a
partition writes anyway, so thresholds cost no request. A store of a bundle without thresholds has no thresholded
counts (nor had any store written before they existed): readers take their absence as "argmax only".

Why this shape. The unit of commit is a partition (many bins): its arrays are written first and its commit group last,
so a partition is either committed or redone, and a bin is complete exactly when a commit lists it. Every attempt of a
planned partition writes keys of its own (`attempt_id`), so two attempts (a retry beside a zombie task, each having seen
other faults) never overwrite each other: each commit lists only the bins its own arrays hold, and of two commits of one
bin the ledger takes one (both are this model's reading of the same files). Nothing is rewritten in place but the
derived tables, and those only behind one commit point (the summary's `consolidated_rows`): the summary, the failure
table and the ledger's partitions grow by appending chunks past the rows that point counts, then the point moves. What a
commit says is checked when it is read: counts made by other thresholds than the store's (a task that started before a
`rethreshold`) are counted again from its scores (`ResultStore._decided`), and a complete bin whose files have other
sizes now than it was read from is classified again (`pipeline.job.run.Selection`). Writing a partition costs a handful
of PUTs whatever its number of bins, and none of them is a probe (`exists`, `info`): a first run sends well under one
store request per bin. A rerun reads the summary (a few GETs) and lists `commits/` (one request per thousand
partitions), so its cost does not grow with the number of complete bins; its consolidation appends its bins' rows to the
summary (the last chunk of each array and new ones, their shapes, then the counts: `ResultStore.consolidate`), so it
costs what the run added, not what the store holds. Partition ids are derived from their bins and the run, and all bytes
are deterministic (fixed codecs, no timestamps). Partitions without a commit (a killed writer) are deleted by the next
run once they are an hour older than its lease, by the store's own clock (a task of a killed client on an external
cluster may still be writing a younger one, and commit it).

One run at a time: a run holds the store's lease (`pipeline.results.lease`) while it writes. The results never
depend on the lease holding: every attempt commits under keys of its own, and a writer that lost its lease after its
last check (paused past it) can still tear the derived tables, but their commit point keeps a digest of every array's
rows (`pipeline.results.table_digests`): each reader checks the arrays it reads, and tables found torn are never taken:
the bins are read from the commits, and the next consolidation rewrites the tables.

A store of the first layout (`ifcbflow-store/1`, one group per bin) is refused with a message that points to
`ifcbflow migrate`, which rewrites it in this layout.

This module is the store's access and its commit protocol (`ResultStore`: identity, commits, the ledger as read,
readers); one job each beside it: `layout` (folders, the commit point, errors), `partitions` (partition and attempt
ids, their keys), `encoding` (tables and partitions as zarr keys), `consolidation` (the derived tables behind their
commit point), `failure_table`, `table_digests` (what the commit point says its tables hold), `records` (what a
commit says, the files' fingerprints, the ledger) and `lease`.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import json
import logging
import posixpath
import warnings
from collections.abc import Iterable, Iterator, Sequence
from datetime import UTC, datetime
from typing import Any

import numpy as np
import zarr
from fsspec.core import url_to_fs
from zarr.core.buffer import default_buffer_prototype
from zarr.core.sync import sync  # zarr's own bridge to its event loop (what its sync API uses)

from model.decision import class_counts, threshold_array, thresholds_digest
from model.versions import installed_versions
from pipeline.faults import with_retries
from pipeline.ifcb.errors import BinFailure
from pipeline.redact import redact_url
from pipeline.results.biomass import Sizing, bin_biomass
from pipeline.results.consolidation import CONSOLIDATED, canonical, consolidate
from pipeline.results.encoding import group_document, partition_documents, read_rows
from pipeline.results.failure_table import COLUMNS as FAILURE_COLUMNS
from pipeline.results.failure_table import failures_from_columns
from pipeline.results.layout import (
    COMMITS,
    DIGESTS,
    LAYOUT,
    LEASE,
    LEDGER,
    OLD_LAYOUTS,
    PARTS,
    PENDING_DECISION,
    ROWS,
    SUMMARY,
    StoreLayoutError,
    StoreMismatchError,
)
from pipeline.results.lease import LEASE_TTL_S, Lease
from pipeline.results.partitions import part_key
from pipeline.results.records import BinRecord, BinResult, Commit, Ledger, StoreTotals, iso_utc, sample_fields
from pipeline.results.summary import (
    BIOMASS_VARIABLES,
    SAMPLE_VARIABLES,
    biomass_fields_at,
    sample_fields_at,
    summary_dataset,
)
from pipeline.results.table_digests import TornTablesError, verify
from pipeline.storage import fs_options

log = logging.getLogger(__name__)

#: Partitions without a commit are deleted once their last write is this much older than the run's lease.
ABANDONED_AFTER_S = 3600.0


def model_identity(bundle_info: dict[str, Any]) -> str:
    """What identifies a store's model: the bundle's `model_hash` (`model.bundle.model_hash`), or its content hash
    for bundle information made without one."""
    return bundle_info.get("model_hash") or bundle_info["content_hash"]


def decision_attributes(
    thresholds: dict[str, float] | None, classes: Sequence[str], *, source: str | None
) -> dict[str, Any]:
    """The root attributes that say how the store decides ROIs: `thresholds` (absent: argmax) and their
    `thresholds_sha256` (`model.decision.thresholds_digest`), and where they came from."""
    attributes: dict[str, Any] = {
        "thresholds_sha256": thresholds_digest(thresholds, classes),
        "thresholds_source": source,
    }
    if thresholds is not None:
        attributes["thresholds"] = dict(zip(classes, threshold_array(thresholds, classes).tolist(), strict=True))
    return attributes


def _retried(method: Any) -> Any:
    """Store I/O retried on transient faults (`pipeline.faults.with_retries`)."""

    @functools.wraps(method)
    def retrying(self: ResultStore, *args: Any, **kwargs: Any) -> Any:
        return with_retries(lambda: method(self, *args, **kwargs), f"{method.__name__} on {redact_url(self.url)}")

    return retrying


class ResultStore:
    """Access to one output store: the client's ledger and summary, the workers' partition commits, readers.

    Cheap to construct and picklable by its arguments (url + storage_options), so tasks carry only those.
    """

    def __init__(self, url: str, storage_options: dict[str, Any] | None = None) -> None:
        self.url = url
        self.storage_options = dict(storage_options or {})
        self.fs, root = url_to_fs(url, **fs_options(url, self.storage_options))
        self.root = root.rstrip("/") or root
        self._zarr_store: Any = None
        self._info: dict[str, Any] | None = None
        #: Whether a read found the summary or the ledger's tables torn (`TornTablesError`): the next consolidation
        #: through this object rewrites them from the commits.
        self.torn = False

    def __getstate__(self) -> dict[str, Any]:
        return {"url": self.url, "storage_options": self.storage_options}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["url"], state["storage_options"])  # type: ignore[misc]

    # --- bytes in and out ---------------------------------------------------------------------------------------
    @property
    def zarr_store(self) -> Any:
        """The zarr store object (FsspecStore for object storage, LocalStore for local paths)."""
        if self._zarr_store is None:
            protocol = self.fs.protocol if isinstance(self.fs.protocol, str) else self.fs.protocol[0]
            if protocol in ("file", "local"):
                self._zarr_store = zarr.storage.LocalStore(self.root)
            else:
                options = fs_options(self.url, self.storage_options)
                self._zarr_store = zarr.storage.FsspecStore.from_url(self.url, storage_options=options)
        return self._zarr_store

    @_retried
    def read_document(self, key: str) -> dict[str, Any] | None:
        buffer = sync(self.zarr_store.get(key, prototype=default_buffer_prototype()))
        return None if buffer is None else json.loads(buffer.to_bytes())

    @_retried
    def read_documents(self, keys: list[str]) -> dict[str, dict[str, Any]]:
        """Many small JSON documents at once (concurrent requests on object storage); missing ones are left out."""

        async def read_all() -> list[Any]:
            prototype = default_buffer_prototype()
            return await asyncio.gather(*(self.zarr_store.get(key, prototype=prototype) for key in keys))

        buffers = sync(read_all()) if keys else []
        return {key: json.loads(buffer.to_bytes()) for key, buffer in zip(keys, buffers, strict=True) if buffer}

    @_retried
    def write_documents(self, documents: dict[str, bytes]) -> None:
        """PUT every key concurrently (one request each on object storage; no listing, no probe)."""

        async def write_all() -> None:
            prototype = default_buffer_prototype()
            await asyncio.gather(
                *(self.zarr_store.set(key, prototype.buffer.from_bytes(data)) for key, data in documents.items())
            )

        sync(write_all())

    @_retried
    def children(self, folder: str) -> list[str]:
        """Names directly under `folder`, listed afresh (one request per thousand names on object storage)."""
        path = posixpath.join(self.root, folder)
        try:
            entries = self.fs.ls(path, detail=False, refresh=True)
        except FileNotFoundError:
            return []
        names = {posixpath.basename(str(entry).rstrip("/")) for entry in entries}
        return sorted(name for name in names if name and name != "zarr.json")

    @_retried
    def remove(self, folder: str) -> None:
        path = posixpath.join(self.root, folder)
        with contextlib.suppress(FileNotFoundError):
            self.fs.rm(path, recursive=True)
        self.fs.invalidate_cache(path)

    # --- the run's identity --------------------------------------------------------------------------------------
    def info(self) -> dict[str, Any] | None:
        """Root attributes (classes, bundle hash, archives, versions), or None when no store exists here.

        After `prepare` this object keeps what it wrote or checked: a run's identity does not change under it.
        """
        if self._info is not None:
            return self._info
        meta = self.read_document("zarr.json")
        return None if meta is None else meta.get("attributes", {})

    def check_layout(self, info: dict[str, Any]) -> None:
        """Refuse a store of another layout, saying how to convert one of ours."""
        layout = info.get("layout")
        if layout in OLD_LAYOUTS:
            raise StoreLayoutError(
                f"{redact_url(self.url)} was written by an earlier ifcbflow (layout {layout}, one group per bin). "
                f"Convert it once with `ifcbflow migrate {redact_url(self.url)}`, then rerun."
            )
        if layout != LAYOUT:
            raise StoreMismatchError(f"{redact_url(self.url)} is not an ifcbflow store (layout {layout!r})")

    def prepare(
        self, *, bundle_info: dict[str, Any], bundle_url: str, archive_url: str, embeddings: bool = False
    ) -> dict[str, Any]:
        """Create the store for this bundle's model, or check that an existing one holds the same model.

        The store's identity is the model (`model_hash`: weights, classes, architecture, preprocessing), not the
        bundle's thresholds: a store created with a bundle takes its thresholds as its decision, and later bundles
        of the same model (refitted thresholds) may classify into it; the store's own thresholds keep deciding
        until `ifcbflow rethreshold` changes them. A store written before model hashes existed is identified by its
        bundle hash once, then gets its model hash. Raises StoreMismatchError when the store holds another model, or
        when `embeddings` differs from the store's (every partition of a store has them, or none).
        """
        identity = model_identity(bundle_info)
        info = self.info()
        if info is None:
            if with_retries(self._holds_more_than_the_lease, "listing the store"):
                raise StoreMismatchError(
                    f"{redact_url(self.url)} exists and is not an ifcbflow store; choose another --out"
                )
            classes = list(bundle_info["classes"])
            thresholds = bundle_info.get("thresholds")
            info = {
                "layout": LAYOUT,
                "classes": classes,
                "model_hash": identity,
                "bundle_hash": bundle_info["content_hash"],
                "bundle_arch": bundle_info.get("arch"),
                "bundle_url": redact_url(bundle_url),
                "archive_urls": [redact_url(archive_url)],
                "versions": installed_versions(),
                **decision_attributes(thresholds, classes, source=redact_url(bundle_url)),
            }
            if embeddings:  # absent, not false: stores without them keep the bytes they always had
                info["embeddings"] = True
            self.write_documents(
                {
                    "zarr.json": group_document(info),
                    f"{PARTS}/zarr.json": group_document({}),
                    f"{COMMITS}/zarr.json": group_document({}),
                }
            )
            self._info = info
            return info
        self.check_layout(info)
        stored = info.get("model_hash")
        same = info.get("bundle_hash") == bundle_info["content_hash"] if stored is None else stored == identity
        if not same:
            raise StoreMismatchError(
                f"refusing to write to {redact_url(self.url)}: it holds results of another model (model "
                f"{stored or info.get('bundle_hash')}, bundle {info.get('bundle_url')}), but the requested bundle "
                f"{redact_url(bundle_url)} has model {identity}. One store holds one model's results: use a new "
                "--out for this model (bundles that differ only in thresholds share a store)."
            )
        if bool(info.get("embeddings")) != embeddings:
            has = "holds" if info.get("embeddings") else "has no"
            raise StoreMismatchError(
                f"{redact_url(self.url)} {has} embeddings: rerun {'with' if info.get('embeddings') else 'without'} "
                "--embeddings (every partition of a store has them, or none), or use a new --out"
            )
        updated = dict(info)
        if stored is None:  # a store of an earlier ifcbflow: its bundle is this one, so is its model
            updated["model_hash"] = identity
        if "thresholds_sha256" not in updated:
            updated.update(decision_attributes(info.get("thresholds"), info["classes"], source=info.get("bundle_url")))
        archive = redact_url(archive_url)
        if archive not in info.get("archive_urls", []):
            updated["archive_urls"] = [*info.get("archive_urls", []), archive]
        if updated != info:
            self.write_documents({"zarr.json": group_document(updated)})
        self._info = updated
        return updated

    def adopt_sizing(self, requested: Sizing | None) -> Sizing | None:
        """The store's morphology settings (`pipeline.results.biomass.Sizing`, root attribute `morphology`): its
        own where it has them (a run may ask for the same or nothing), else `requested`, then written to it (the
        store measures every later bin alike). Raises StoreMismatchError when the run asks for other settings.
        Call after `prepare`, holding the lease."""
        info = dict(self.info() or {})
        kept = Sizing.from_attributes(info.get("morphology"))
        if kept is not None:
            if requested is not None and not requested.same_as(kept):
                raise StoreMismatchError(
                    f"{redact_url(self.url)} measures its bins with {kept.to_attributes()}, not "
                    f"{requested.to_attributes()}: every bin of a store is measured alike; rerun without "
                    "--pixels-per-micron/--taxa, or use a new --out"
                )
            return kept
        if requested is not None:
            self.write_info({**info, "morphology": requested.to_attributes()})
        return requested

    def _holds_more_than_the_lease(self) -> bool:
        """Whether the folder of a store that has no root yet holds anything but its lease (taken before `prepare`)."""
        if not self.fs.exists(self.root):
            return False
        names = [posixpath.basename(str(entry).rstrip("/")) for entry in self.fs.ls(self.root, detail=False)]
        return any(not name.startswith(LEASE) for name in names)

    def check_decision(self, info: dict[str, Any]) -> None:
        """Refuse to read or extend counts while a change of thresholds is half applied (a killed `rethreshold`)."""
        pending = info.get(PENDING_DECISION)
        if pending is not None:
            raise StoreLayoutError(
                f"{redact_url(self.url)}: a change of thresholds (to {pending.get('source')}) was interrupted; "
                f"finish it with `ifcbflow rethreshold {redact_url(self.url)} --thresholds {pending.get('source')}`"
            )

    def write_info(self, info: dict[str, Any]) -> None:
        """Replace the root attributes (one PUT: the store's commit point for a change of decision)."""
        self.write_documents({"zarr.json": group_document(info)})
        self._info = info

    # --- one run at a time ------------------------------------------------------------------------------------------
    def lease(self, owner: str, ttl_s: float = LEASE_TTL_S) -> contextlib.AbstractContextManager[Lease]:
        """Hold the store's lease for the body (`pipeline.results.lease`); refuse if another live run holds it."""
        local = isinstance(self.zarr_store, zarr.storage.LocalStore)
        lease = Lease(self.fs, posixpath.join(self.root, LEASE), local=local, label=redact_url(self.url))
        return lease.held(owner, ttl_s)

    # --- worker side: commit one partition ------------------------------------------------------------------------
    def commit_partition(
        self,
        part: str,
        results: Sequence[BinResult],
        classes: Sequence[str],
        failures: Sequence[BinFailure] = (),
        incomplete: Sequence[dict[str, str]] = (),
        thresholds: np.ndarray | None = None,
        replaces: Sequence[str] = (),
        sizing: Sizing | None = None,
    ) -> Commit:
        """Write the partition's arrays, then its commit (last). The same input writes the same bytes.

        `part` is written once: an attempt of a planned partition commits under its own `attempt_id`, compaction and
        migration under ids of their own.

        With the store's `thresholds` (in class order) each bin's record also carries its thresholded counts;
        `replaces` names the partitions whose bins this one takes over (`pipeline.results.compact`). With the store's
        `sizing` each measured bin's record carries its biovolume and carbon per class (`pipeline.results.biomass`).
        """
        n_classes = len(classes)
        for result in results:
            if result.scores.shape[1:] != (n_classes,):
                raise ValueError(f"bin {result.bin}: scores {result.scores.shape}, the store has {n_classes} classes")
        decided = None if thresholds is None else dict(zip(classes, np.asarray(thresholds).tolist(), strict=True))
        commit = Commit(
            part=part,
            failures=list(failures),
            incomplete=list(incomplete),
            thresholds_sha256=thresholds_digest(decided, classes),
            replaces=list(replaces),
        )
        offset = 0
        for result in results:
            n = len(result.roi_numbers)
            thresholded = None if thresholds is None else class_counts(result.scores, thresholds).tolist()
            biomass = None if sizing is None else bin_biomass(result.bin, result.morphology, result.scores, sizing)
            commit.bins.append(
                BinRecord(
                    bin=result.bin,
                    time=iso_utc(result.time),
                    n_rois=n,
                    ml_analyzed=result.ml_analyzed,
                    counts=[int(c) for c in result.counts],
                    part=part,
                    roi_offset=offset,
                    counts_thresholded=thresholded,
                    warnings=list(result.warnings) or None,
                    files_digest=result.files_digest,
                    **sample_fields(result.sample),
                    biovolume=None if biomass is None else biomass[0],
                    carbon=None if biomass is None else biomass[1],
                )
            )
            offset += n
        if results:
            self.write_documents(partition_documents(part, results, n_classes))
        self.write_documents({f"{COMMITS}/{part}/zarr.json": group_document(commit.to_attributes())})
        return commit

    # --- client side: the ledger -----------------------------------------------------------------------------------
    def ledger(self, *, clean: bool = False, finishing_decision: bool = False, remember: bool = False) -> Ledger:
        """Complete and failed bins: the summary's, plus commits it does not show yet (a run that stopped early).

        With `clean` (only while this run holds the store), partitions without a commit are deleted: their
        writer died before committing and their bins will be redone. A store whose change of thresholds was
        interrupted is refused (StoreLayoutError) unless `finishing_decision` (the run that finishes it).
        With `remember`, the consolidated bins read from the store are kept for this process's later ledgers, as a
        consolidation keeps what it wrote (a `watch`, which reads the ledger at its start: its first poll's run then
        reads no bin list; a one-shot run does not keep a second copy of a million ids).
        """
        info = self.info()
        if info is None:
            raise FileNotFoundError(f"no ifcbflow store at {redact_url(self.url)}")
        self.check_layout(info)
        if not finishing_decision:
            self.check_decision(info)
        ledger = self._consolidated_ledger(remember)
        committed = self.children(COMMITS)
        pending = [part for part in committed if part not in ledger.parts]
        documents = self.read_documents([f"{COMMITS}/{part}/zarr.json" for part in pending])
        commits = [self._decided(Commit.from_attributes(meta["attributes"]), info) for meta in documents.values()]
        for commit in sorted(commits, key=lambda commit: bool(commit.replaces)):  # merged ones over what they replace
            ledger.add(commit)
        if clean:
            self._remove_abandoned(set(committed))
        return ledger

    def _decided(self, commit: Commit, info: dict[str, Any]) -> Commit:
        """`commit` with thresholded counts by the store's current thresholds.

        A commit's counts follow the thresholds its task carried (`thresholds_sha256`): those of a task that started
        before a `rethreshold` (a zombie, a run that lost its lease) or of a commit the summary was rebuilt from after
        a change are another decision. Those counts are never taken: they are counted again from the partition's
        stored scores (one read of its `scores`, only for such commits)."""
        classes = list(info["classes"])
        current = info.get("thresholds")
        digest = info.get("thresholds_sha256") or thresholds_digest(current, classes)
        if commit.thresholds_sha256 == digest or (commit.thresholds_sha256 is None and current is None):
            return commit
        values = threshold_array(current, classes)
        scores = self.read_scores(commit.part) if values is not None and any(r.n_rois for r in commit.bins) else None
        bins = []
        for record in commit.bins:
            counted = None
            if values is not None:
                rows = np.zeros((0, len(classes)), np.float32) if scores is None else scores
                counted = class_counts(rows[record.roi_offset : record.roi_offset + record.n_rois], values).tolist()
            bins.append(dataclasses.replace(record, counts_thresholded=counted))
        log.info("%s: commit %s was counted by other thresholds: counted again by the store's", self.url, commit.part)
        return dataclasses.replace(commit, bins=bins, thresholds_sha256=digest)

    def _remove_abandoned(self, committed: set[str]) -> None:
        """Delete partitions without a commit whose last write is `ABANDONED_AFTER_S` older than this run's lease
        (both times from the store's own clock): a task of a killed client on an external cluster may still be
        writing a younger one, and commit it."""
        uncommitted = [part for part in self.children(PARTS) if part not in committed]
        if not uncommitted:
            return
        now = _modified(with_retries(lambda: self.fs.info(posixpath.join(self.root, LEASE)), "reading the lease"))
        for part in uncommitted:
            path = posixpath.join(self.root, PARTS, part)
            found = with_retries(lambda path=path: self.fs.find(path, detail=True), f"listing {part}")
            newest = max((_modified(entry) for entry in found.values()), default=0.0)
            if now - newest >= ABANDONED_AFTER_S:
                self.remove(f"{PARTS}/{part}")

    def _consolidated_ledger(self, remember: bool = False) -> Ledger:
        """The ledger as the last consolidation wrote it: which bins and partitions (two arrays, up to the rows the
        summary's attributes count); the full records and failures are read only if asked for.

        The two arrays are read only when this process did not write that consolidation itself: a consolidation
        remembers what it wrote (`CONSOLIDATED`), and the summary's attributes, which every consolidation rewrites
        last with its row counts, tell whether the store still holds exactly that. So a `watch` poll, which
        consolidated the previous one, reads one small document here whatever the store's size. With `remember` a
        read from the store is kept the same way (the bin ids share their strings with the ledger's set)."""
        attributes = self._summary_attributes()
        known = CONSOLIDATED.get(self.url)
        if known is not None and attributes is not None and known[0] == canonical(attributes):
            complete, parts, digests = set(known[1]), set(known[2]), dict(known[3])
        else:
            try:
                tables = self._read_tables(
                    {SUMMARY: ("bin", "files_digest"), LEDGER: ("consolidated_part",)}, attributes
                )
            except TornTablesError as err:  # every commit is pending: the bins come from the commits
                self._found_torn(err)
                return Ledger(load=self._from_commits)
            summary = tables.get(SUMMARY, {})
            bins = [str(b) for b in summary.get("bin", np.array([])).tolist()]
            complete = set(bins)
            fingerprints = summary.get("files_digest")  # absent in stores written before fingerprints were kept
            digests = (
                {} if fingerprints is None else {b: d for b, d in zip(bins, fingerprints.tolist(), strict=True) if d}
            )
            parts = {str(p) for p in tables.get(LEDGER, {}).get("consolidated_part", np.array([])).tolist()}
            if remember and attributes is not None and ROWS in attributes:
                CONSOLIDATED[self.url] = (canonical(attributes), frozenset(complete), frozenset(parts), dict(digests))
        ledger = Ledger(
            complete,
            parts,
            load=functools.partial(self._consolidated_records, attributes),
            load_failures=functools.partial(self._consolidated_failures, attributes),
            digests=digests,
        )
        if attributes is not None and ROWS in attributes:
            ledger.rows, ledger.summary_attributes = dict(attributes[ROWS]), attributes
        return ledger

    def _summary_attributes(self) -> dict[str, Any] | None:
        """The summary group's attributes (with `ROWS`, what a reader trusts), None when there is no summary."""
        meta = self.read_document(f"{SUMMARY}/zarr.json")
        return None if meta is None else meta.get("attributes", {})

    def _consolidated_failures(self, attributes: dict[str, Any] | None) -> dict[str, BinFailure]:
        """The failed bins the last consolidation recorded, as of the summary's `attributes` (four small arrays; no
        bin record is read): the rows they count; a torn table of before is dropped with a warning
        (`pipeline.results.failure_table`)."""
        counted = "failed" in ((attributes or {}).get(ROWS) or {})
        try:
            kept = self._read_tables({LEDGER: FAILURE_COLUMNS}, attributes if counted else None).get(LEDGER, {})
        except TornTablesError as err:
            self._found_torn(err)
            return self._from_commits()[1]
        failures = failures_from_columns(kept)
        if failures is None:
            log.warning("%s: the failure table was torn by an interrupted write: its bins will be read again", self.url)
            return {}
        return failures

    def _consolidated_records(
        self, attributes: dict[str, Any] | None
    ) -> tuple[dict[str, BinRecord], dict[str, BinFailure]]:
        try:
            tables = self._read_tables(
                {
                    SUMMARY: ("bin", "time", "n_rois", "ml_analyzed", "counts", "counts_thresholded", "part",
                              "roi_offset", "files_digest", *SAMPLE_VARIABLES, *BIOMASS_VARIABLES),
                    LEDGER: ("warned_bin", "warning"),
                },
                attributes,
            )  # fmt: skip
        except TornTablesError as err:
            self._found_torn(err)
            return self._from_commits()
        records: dict[str, BinRecord] = {}
        summary, kept = tables.get(SUMMARY), tables.get(LEDGER)
        warned: dict[str, list[str]] = {}
        if kept is not None and "warned_bin" in kept:  # absent in stores written before warnings were kept
            for bin_id, warning in zip(kept["warned_bin"].tolist(), kept["warning"].tolist(), strict=True):
                warned.setdefault(str(bin_id), []).append(str(warning))
        if summary is not None:
            times = summary["time"].astype("datetime64[s]")
            thresholded = summary.get("counts_thresholded")  # absent in stores of bundles without thresholds
            fingerprints = summary.get("files_digest")  # absent in stores written before fingerprints were kept
            for i, bin_id in enumerate(summary["bin"].tolist()):
                volume = float(summary["ml_analyzed"][i])
                records[str(bin_id)] = BinRecord(
                    bin=str(bin_id),
                    time=f"{np.datetime_as_string(times[i], unit='s')}Z",
                    n_rois=int(summary["n_rois"][i]),
                    ml_analyzed=None if np.isnan(volume) else volume,
                    counts=[int(c) for c in summary["counts"][i]],
                    part=str(summary["part"][i]),
                    roi_offset=int(summary["roi_offset"][i]),
                    counts_thresholded=None if thresholded is None else thresholded[i].tolist(),
                    warnings=warned.get(str(bin_id)),
                    files_digest=None if fingerprints is None else int(fingerprints[i]) or None,
                    **sample_fields_at(summary, i),  # absent in stores written before they were kept: None
                    **biomass_fields_at(summary, i),
                )
        return records, self._consolidated_failures(attributes)

    def _from_commits(self) -> tuple[dict[str, BinRecord], dict[str, BinFailure]]:
        """Every complete bin's record and the recorded failures, from the commits alone (the facts the tables are
        derived from): what readers take when the tables are torn. Reads every commit document."""
        info = self.info() or {}
        committed = self.children(COMMITS)
        documents = self.read_documents([f"{COMMITS}/{part}/zarr.json" for part in committed])
        commits = [self._decided(Commit.from_attributes(meta["attributes"]), info) for meta in documents.values()]
        ledger = Ledger()
        for commit in sorted(commits, key=lambda commit: bool(commit.replaces)):  # merged ones over what they replace
            ledger.add(commit)
        return ledger.bins, ledger.recorded

    def _found_torn(self, err: TornTablesError) -> None:
        if not self.torn:
            log.warning("%s: %s", redact_url(self.url), err)
        self.torn = True

    def totals(self, ledger: Ledger) -> StoreTotals:
        """Complete bins, their ROIs and the newest bin's time, from two summary arrays (`time` and `n_rois`, 16
        bytes a bin: 32 chunk reads at a million bins) and the commits the summary does not show yet, without the
        bin records `ledger.bins` reads (every column: 75 s and 920 MiB at a million bins).

        Where those commits re-commit a bin or replace partitions (a compaction not yet consolidated) the sums could
        count a bin twice: then the records are read.
        """
        pending = list({record.bin: record for commit in ledger.pending for record in commit.bins}.values())
        if ledger.rows is None or ledger.recompleted or any(commit.replaces for commit in ledger.pending):
            return _totals_of(ledger.bins.values())
        try:
            summary = self._read_tables({SUMMARY: ("time", "n_rois")}, ledger.summary_attributes).get(SUMMARY, {})
        except TornTablesError as err:
            self._found_torn(err)
            return _totals_of(ledger.bins.values())
        times, rois = summary.get("time", np.array([], np.int64)), summary.get("n_rois", np.array([], np.int64))
        added = _totals_of(pending)
        newest = datetime.fromtimestamp(int(times.max()), UTC) if len(times) else None
        if added.newest is not None and (newest is None or added.newest > newest):
            newest = added.newest
        return StoreTotals(len(times) + added.bins, int(rois.sum()) + added.rois, newest)

    @_retried
    def _read_tables(
        self, wanted: dict[str, tuple[str, ...]], attributes: dict[str, Any] | None = None
    ) -> dict[str, dict[str, np.ndarray]]:
        """Arrays of small groups, by group and name (groups that do not exist are left out): whole, or, given the
        summary's `attributes`, the rows they count (`ROWS`) along the dimensions counted there, each checked against
        the digest the attributes keep of it (TornTablesError where it does not hold those rows)."""
        limits = (attributes or {}).get(ROWS, {})
        digests = (attributes or {}).get(DIGESTS)
        tables: dict[str, dict[str, np.ndarray]] = {}
        for group_path, names in wanted.items():
            try:
                group = zarr.open_group(self.zarr_store, path=group_path, mode="r", zarr_format=3)
            except FileNotFoundError:
                continue
            tables[group_path] = {}
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", category=UserWarning)
                for name in names:
                    if name in group:
                        values = read_rows(group[name], limits)
                        verify(f"{group_path}/{name}", values, digests)
                        tables[group_path][name] = values
        return tables

    def consolidate(
        self,
        ledger: Ledger,
        extra_failures: Sequence[BinFailure] = (),
        info: dict[str, Any] | None = None,
        *,
        full: bool = False,
    ) -> int:
        """Bring `summary` and `ledger` up to `ledger` (and failures found by listing); returns the bin count:
        appended behind one commit point, or rewritten whole where an append cannot say it
        (`pipeline.results.consolidation`). `info`: the root attributes the summary follows, when not yet the store's
        own."""
        return consolidate(self, ledger, extra_failures, info, full=full)

    # --- reading results --------------------------------------------------------------------------------------------
    def summary(self, ledger: Ledger | None = None):  # -> xr.Dataset
        """The bin x class table of every complete bin (from the ledger: right even before a consolidation)."""
        return summary_dataset((ledger or self.ledger()).bins.values(), self.info() or {})

    @_retried
    def read_part(self, part: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(bin per ROI, ROI numbers, scores) of a committed partition."""
        group = zarr.open_group(self.zarr_store, path=part_key(part), mode="r", zarr_format=3)
        return np.asarray(group["bin"][...]), np.asarray(group["roi_number"][...]), np.asarray(group["scores"][...])

    @_retried
    def read_embeddings(self, part: str) -> np.ndarray | None:
        """The embeddings float16 (roi, feature) of a committed partition; None for a store without them."""
        group = zarr.open_group(self.zarr_store, path=part_key(part), mode="r", zarr_format=3)
        return np.asarray(group["embeddings"][...]) if "embeddings" in group else None

    @_retried
    def read_morphology(self, part: str) -> np.ndarray | None:
        """The morphology float32 (roi, feature) in pixels of a committed partition (`pipeline.morphology.COLUMNS`;
        NaN rows: bins not measured); None for a partition without it."""
        group = zarr.open_group(self.zarr_store, path=part_key(part), mode="r", zarr_format=3)
        return np.asarray(group["morphology"][...]) if "morphology" in group else None

    @_retried
    def read_scores(self, part: str) -> np.ndarray:
        """The class scores float32 (roi, class) of a committed partition, without its other arrays."""
        group = zarr.open_group(self.zarr_store, path=part_key(part), mode="r", zarr_format=3)
        return np.asarray(group["scores"][...])

    def read_bin(self, bin_id: str, ledger: Ledger | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(ROI numbers int64 (roi,), scores float32 (roi, class)) of a complete bin."""
        record = (ledger or self.ledger()).bins[bin_id]
        _, numbers, scores = self.read_part(record.part)
        rows = slice(record.roi_offset, record.roi_offset + record.n_rois)
        return numbers[rows].astype(np.int64), scores[rows]

    def iter_bins(
        self, records: Iterable[BinRecord] | None = None
    ) -> Iterator[tuple[BinRecord, np.ndarray, np.ndarray]]:
        """Complete bins (every one, or those of `records`) with their ROI numbers and scores, in time order,
        reading each partition once."""
        for record, numbers, scores, _ in self._iter_bins(records, measured=False):
            yield record, numbers, scores

    def iter_measured_bins(
        self, records: Iterable[BinRecord] | None = None
    ) -> Iterator[tuple[BinRecord, np.ndarray, np.ndarray, np.ndarray | None]]:
        """`iter_bins` with each bin's morphology float32 (roi, feature) in pixels (None: its partition has none;
        NaN rows: the bin was not measured)."""
        return self._iter_bins(records, measured=True)

    def _iter_bins(
        self, records: Iterable[BinRecord] | None, *, measured: bool
    ) -> Iterator[tuple[BinRecord, np.ndarray, np.ndarray, np.ndarray | None]]:
        chosen = self.ledger().bins.values() if records is None else records
        ordered = sorted(chosen, key=lambda r: (r.time, r.bin))
        by_part: dict[str, list[BinRecord]] = {}
        for record in ordered:
            by_part.setdefault(record.part, []).append(record)
        loaded: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray | None]] = {}
        remaining = {part: len(members) for part, members in by_part.items()}
        for record in ordered:
            if record.part not in loaded:
                _, numbers, scores = self.read_part(record.part)
                loaded[record.part] = (numbers, scores, self.read_morphology(record.part) if measured else None)
            numbers, scores, morphology = loaded[record.part]
            rows = slice(record.roi_offset, record.roi_offset + record.n_rois)
            yield record, numbers[rows].astype(np.int64), scores[rows], None if morphology is None else morphology[rows]
            remaining[record.part] -= 1
            if remaining[record.part] == 0:
                del loaded[record.part]  # bounded memory: a partition is dropped once its bins are out


def _totals_of(records: Iterable[BinRecord]) -> StoreTotals:
    """`StoreTotals` of bin records (each bin once)."""
    listed = list(records)
    newest = max((record.time for record in listed), default=None)  # ISO times with Z: text order is time order
    moment = None if newest is None else datetime.fromisoformat(newest.replace("Z", "+00:00"))
    return StoreTotals(len(listed), sum(record.n_rois for record in listed), moment)


def _modified(entry: dict[str, Any]) -> float:
    """An fsspec entry's modification time in seconds (local `mtime`, S3 `LastModified`, GCS `updated`, Azure
    `last_modified`); 0 when it has none (then it counts as old)."""
    value = entry.get("mtime", entry.get("LastModified", entry.get("updated", entry.get("last_modified"))))
    if isinstance(value, str):
        value = datetime.fromisoformat(value.replace("Z", "+00:00"))
    if isinstance(value, datetime):
        return value.timestamp()
    return float(value or 0.0)


def open_summary(url: str, storage_options: dict[str, Any] | None = None):  # -> xr.Dataset
    """The consolidated `summary` group as an xarray Dataset, sorted by time (what `xr.open_zarr(url,
    group="summary")` gives, in append order): the rows its attributes count (`ROWS`), and no more, each array
    checked against its digest. Tables found torn are not taken: the Dataset is then built from the commits
    (`ResultStore.summary`), with a warning."""
    store = ResultStore(url, storage_options)
    attributes = store._summary_attributes()
    if attributes is None:
        raise FileNotFoundError(f"no summary in {redact_url(url)}")
    try:
        dataset = _open_rows(store, attributes)
    except TornTablesError as err:
        store._found_torn(err)
        dataset = store.summary()
    if dataset.sizes.get("bin", 0) > 1:
        order = np.lexsort((np.array(dataset["bin"].values.tolist(), dtype=str), dataset["time"].values))
        if (order != np.arange(len(order))).any():
            dataset = dataset.isel(bin=order)
    return dataset


def _open_rows(store: ResultStore, attributes: dict[str, Any]):  # -> xr.Dataset
    """The summary's arrays, the rows `attributes` count along their first dimension (`ROWS`; whole in a summary
    of before), checked against their digests (TornTablesError) and decoded as xarray does."""
    import xarray as xr

    group = zarr.open_group(store.zarr_store, path=SUMMARY, mode="r", zarr_format=3)
    limits, digests = attributes.get(ROWS, {}), attributes.get(DIGESTS)
    variables = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=UserWarning)  # zarr's notes on string dtypes
        for name, array in group.arrays():
            values = read_rows(array, limits)
            verify(f"{SUMMARY}/{name}", values, digests)
            variables[name] = xr.Variable(tuple(array.metadata.dimension_names or ()), values, dict(array.attrs))
    return xr.decode_cf(xr.Dataset(variables, attrs=dict(group.attrs)))
