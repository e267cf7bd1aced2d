"""The output store (zarr v3, also the job's ledger), its exports (Dashboard class files, CSV) and the report.

Imports `model/` and `pipeline.ifcb`; knows nothing about clusters, the job's scheduling or the terminal.
"""
