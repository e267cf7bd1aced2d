"""The classification job: plan partitions of whole bins, classify them on the workers, commit to the store.

Imports `model/`, `pipeline.ifcb`, `pipeline.results` and `pipeline.cluster`; never the CLI or the terminal: it
reports progress through the small `Reporter` interface that the CLI implements.
"""
