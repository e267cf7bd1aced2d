"""Where the Dask workers come from: a local cluster, SLURM/PBS jobs (dask-jobqueue), an existing scheduler; TLS,
GPU pinning and the TensorFlow runtime set-up of each worker process.

Imports `model/` only; knows nothing about the job it runs.
"""
