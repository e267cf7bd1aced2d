"""The distributed IFCB job, one folder per layer, in the order data flows through them:

- `ifcb/`     the raw format and archives (bin ids, `.hdr`, `.adc`, `.roi`, volume analysed, listing, synthetic bins);
- `results/`  the output store and its ledger, exports, the report;
- `cluster/`  Dask clusters: local, SLURM/PBS (dask-jobqueue), TLS, GPU pinning, the TensorFlow runtime set-up;
- `job/`      the classification job: plan, the worker task, the client-side run;
- `cli/`      the `ifcbflow` command, the only place that knows about the terminal.

Each layer imports only `model/` and the layers listed above it; `demo.py` tells the whole story with the CLI's parts.
"""

from pipeline import storage as _storage  # noqa: F401  (makes az:// and abfs:// URLs open through pipeline.azure_blob)
