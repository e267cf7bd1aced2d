"""The distributed IFCB job: the raw format, archives, the Dask graph, the output store and the CLI."""
