"""Where the Dask workers come from: a local cluster, SLURM/PBS jobs (dask-jobqueue), an existing scheduler, the
workers a batch script starts (`workers`); TLS, a clean stop on signals, GPU pinning and the TensorFlow runtime set-up
of each worker process.

Imports `model/` only; knows nothing about the job it runs.
"""
