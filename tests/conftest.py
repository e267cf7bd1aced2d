"""Fixtures on real parts: the shared real IFCB data, a moto S3 server on loopback, a Dask LocalCluster."""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

# Keep TensorFlow's C++ logging quiet in this process and in every worker process it starts.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = REPO.parent / "shared" / "data"


def _shared_dir(name: str) -> Path:
    path = SHARED_DATA / name
    if not path.is_dir():
        pytest.skip(f"real fixtures not found at {path} (../shared/data beside the repo; absent in a fresh clone)")
    return path


@pytest.fixture(scope="session")
def ifcb_data() -> Path:
    """`../shared/data/ifcb`: real bins from public instruments (see its SOURCES.md)."""
    return _shared_dir("ifcb")


@pytest.fixture(scope="session")
def utopia_data() -> Path:
    """`../shared/data/utopia`: the deployed ifcbUTOPIA architecture and real labelled ROIs."""
    return _shared_dir("utopia")


@dataclass
class S3Server:
    """A moto S3 server on loopback, reached through s3fs over HTTP."""

    endpoint_url: str

    @property
    def storage_options(self) -> dict[str, Any]:
        return {
            "key": "testing",
            "secret": "testing",
            # No region_name: s3fs would send it as a LocationConstraint, which S3 refuses for us-east-1.
            "client_kwargs": {"endpoint_url": self.endpoint_url},
            "skip_instance_cache": True,
        }

    def filesystem(self):  # -> s3fs.S3FileSystem
        import s3fs

        return s3fs.S3FileSystem(**self.storage_options)

    def new_bucket(self) -> str:
        """Create a fresh bucket and return its name."""
        name = f"test-{uuid.uuid4().hex[:12]}"
        self.filesystem().mkdir(name)
        return name


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    """A real S3 server (moto's server mode) on a free loopback port for the whole session."""
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one log line per request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield S3Server(endpoint_url=f"http://{host}:{port}")
    finally:
        server.stop()


@pytest.fixture(scope="session")
def dask_client() -> Iterator[Any]:
    """A real `distributed.LocalCluster` with 2 worker processes (1 thread each), shared by the session."""
    from distributed import Client, LocalCluster

    with LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None, memory_limit="4GiB"
    ) as cluster, Client(cluster) as client:
        yield client
