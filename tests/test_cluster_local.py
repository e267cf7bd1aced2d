"""The cluster factory: the embedded default, an existing scheduler by address or by scheduler file."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pipeline.cluster.client import open_client, workers_have_gpus
from pipeline.cluster.local import cores, visible_gpus
from pipeline.cluster.runtime import TF_THREADS_ENV

pytestmark = pytest.mark.slow


def test_local_cpu_cluster_splits_the_cores() -> None:
    if visible_gpus():
        pytest.skip("GPUs visible: the local cluster starts GPU workers (see the gpu-marked tests)")
    with open_client("local", workers=2, dashboard_address=None) as client:
        info = client.scheduler_info(n_workers=-1)["workers"].values()
        assert [w["nthreads"] for w in info] == [1, 1]
        threads = client.run(lambda: os.environ.get(TF_THREADS_ENV))
        assert set(threads.values()) == {str(max(1, cores() // 2))}
        assert not workers_have_gpus(client)


def test_existing_scheduler_by_address_and_file(dask_client, tmp_path: Path) -> None:
    address = dask_client.scheduler.address
    with open_client(address) as client:
        assert client.scheduler.address == address
        assert client.submit(sum, [1, 2], pure=False).result() == 3
    scheduler_file = tmp_path / "scheduler.json"
    dask_client.write_scheduler_file(str(scheduler_file))
    with open_client(str(scheduler_file)) as client:
        assert client.scheduler.address == address
    assert dask_client.submit(sum, [3], pure=False).result() == 3  # leaving did not stop the external cluster


def test_unknown_cluster_names_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown cluster"), open_client("nowhere"):
        pass
    with pytest.raises(ValueError, match="needs jobqueue settings"), open_client("slurm"):
        pass
