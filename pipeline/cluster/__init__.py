"""Where the Dask workers come from: a local cluster, SLURM/PBS jobs (dask-jobqueue), an existing scheduler, the
workers a batch script starts (`workers`); TLS, a clean stop on signals, the GPUs a process sees (`devices`), GPU
pinning (`gpu_pin`) and each worker process's set-up for the model (`worker_setup`).

Imports `model/` only; knows nothing about the job it runs.
"""
