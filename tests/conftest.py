"""Fixtures on real parts: the shared real IFCB data, a moto S3 server and an Azurite Azure Blob Storage emulator on
loopback, a Dask LocalCluster."""

from __future__ import annotations

import logging
import os
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.error import HTTPError
from urllib.request import urlopen

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


#: Azurite, installed by `make azurite` (npm, into .azurite/: .ci/run does it first).
AZURITE = REPO / ".azurite" / "node_modules" / ".bin" / "azurite-blob"
#: Azurite's development account and its key, as Azurite's documentation publishes them: no secret of anyone's.
AZURITE_ACCOUNT = "devstoreaccount1"
AZURITE_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


@dataclass
class AzureServer:
    """An Azurite blob service on loopback, reached through adlfs over HTTP (path-style: the account is the first
    segment of the path, as Azurite serves it)."""

    host: str  # 127.0.0.1:port

    def connection_string(self, endpoint: str | None = None, key: str = AZURITE_KEY) -> str:
        """The account's connection string; `endpoint` (http://host:port) sends its requests there instead, e.g.
        to a proxy in front of Azurite; `key` signs them (another one is refused)."""
        blob_endpoint = f"{endpoint or 'http://' + self.host}/{AZURITE_ACCOUNT}"
        return (
            f"DefaultEndpointsProtocol=http;AccountName={AZURITE_ACCOUNT};AccountKey={key};"
            f"BlobEndpoint={blob_endpoint};"
        )

    def options(self, endpoint: str | None = None, key: str = AZURITE_KEY) -> dict[str, Any]:
        """Storage options that reach Azurite (or `endpoint` in front of it), signed with `key`."""
        return {"connection_string": self.connection_string(endpoint, key), "skip_instance_cache": True}

    @property
    def storage_options(self) -> dict[str, Any]:
        return self.options()

    def filesystem(self, endpoint: str | None = None, key: str = AZURITE_KEY):  # -> pipeline.azure_blob.Azure...
        """An `az://` filesystem (what ifcbflow opens for those URLs) with `options(endpoint, key)`."""
        from pipeline.azure_blob import AzureBlobFileSystem

        return AzureBlobFileSystem(**self.options(endpoint, key))

    def new_container(self) -> str:
        """Create a fresh container and return its name."""
        name = f"test-{uuid.uuid4().hex[:12]}"
        self.filesystem().mkdir(name)
        return name


def _missing(reason: str) -> None:
    """Skip with `reason`; under CI (the CI variable set) fail instead: the tests must not pass untested there."""
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI is set: .ci/run installs it)", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def azurite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AzureServer]:
    """A real Azure Blob Storage API (Azurite, blob service only, in memory) on a free loopback port for the whole
    session. Skipped with the reason where Azurite or the azure extra is not installed; under CI that fails."""
    try:
        import adlfs  # noqa: F401
    except ImportError:
        _missing("adlfs is not installed (the azure extra: pip install -e '.[azure]')")
    if not AZURITE.exists():
        _missing(f"Azurite is not installed at {AZURITE.relative_to(REPO)} (make azurite: npm, Node.js)")
    work = tmp_path_factory.mktemp("azurite")  # its working folder (nothing is written there in memory mode)
    log_path = work / "azurite.log"
    with log_path.open("wb") as log:
        server = subprocess.Popen(
            [str(AZURITE), "--blobHost", "127.0.0.1", "--blobPort", "0", "--inMemoryPersistence",
             "--extentMemoryLimit", "1024", "--skipApiVersionCheck", "--loose", "--disableTelemetry", "--silent"],
            cwd=work, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )  # fmt: skip
    try:
        host = _azurite_host(server, log_path)
        yield AzureServer(host)
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def _azurite_host(server: subprocess.Popen, log_path: Path, timeout_s: float = 60.0) -> str:
    """host:port that Azurite listens on (it says so once it does), once it answers HTTP there."""
    deadline = time.monotonic() + timeout_s
    marker = "successfully listens on http://"
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"Azurite exited ({server.returncode}): {log_path.read_text()[-2000:]}")
        text = log_path.read_text(errors="replace")
        if marker in text:
            host = text.split(marker, 1)[1].split()[0].strip().rstrip("/")
            try:
                urlopen(f"http://{host}/{AZURITE_ACCOUNT}?comp=list", timeout=2)
            except HTTPError:  # an answer (unsigned: refused) is what was waited for
                return host
            except OSError:
                pass
            else:
                return host
        time.sleep(0.1)
    raise RuntimeError(f"Azurite did not answer within {timeout_s:.0f} s: {log_path.read_text()[-2000:]}")


@pytest.fixture(scope="session")
def dask_client() -> Iterator[Any]:
    """A real `distributed.LocalCluster` with 2 worker processes (1 thread each), shared by the session."""
    from distributed import Client, LocalCluster

    with LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None, memory_limit="4GiB"
    ) as cluster, Client(cluster) as client:
        yield client
