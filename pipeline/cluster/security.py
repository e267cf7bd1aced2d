"""Per-run TLS for the Dask scheduler, its workers and the client, and the private directory its files live in.

A Dask scheduler executes whatever a connected peer sends it, so on a shared cluster a plain `tcp://` scheduler is
open to every user of that network. Each run gets its own key and certificate, and the scheduler accepts only peers
that present them. Two ways to make them, each where the other cannot serve:

- `temporary_certificates` (`--cluster slurm|pbs`, the client on a login node): distributed's `Security.temporary()`,
  the ecosystem's per-run certificate. Worker jobs read it from files, so its worker copy is written here, into the
  run's private directory, rather than through dask-jobqueue's `shared_temp_directory`: dask-jobqueue deletes its
  copies only when the cluster object is garbage-collected, while a run must remove them when it ends, including
  on SIGTERM. The certificate's validity (a year, fixed by distributed) does not matter: only the run's own
  processes trust it, and they are gone with the run.
- `create_run_certificates` (`ifcbflow tls-certs`, batch scripts): `dask scheduler` and `dask worker` started by a
  script read files, and the job's time limit is known, so the certificate expires with the job. A CA signs it
  whose private key is never written anywhere, so nobody (not even this process, later) can mint another.

(The embedded cluster, `--cluster local`, needs no files: its workers are this process's children and get
`Security.temporary()`'s certificate through their nannies, in memory; `pipeline.cluster.local.run_security`.)

Either way the files sit in a directory only the owner can open (0700, files 0600) on a file system the workers can
read, with a record of the process that owns it. A run killed by SIGKILL cannot clean up: the next run to create a
directory under the same parent removes those of dead owners on its own host, and any whose certificate expired.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import shutil
import socket
import tempfile
from dataclasses import dataclass
from pathlib import Path

import psutil
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from distributed.security import Security

logger = logging.getLogger(__name__)

#: Where per-run directories go unless told otherwise: the home directory is on the shared file system of
#: nearly every HPC cluster, and only its owner can read it. Override with IFCBFLOW_TLS_DIR or `--tls-dir`.
DEFAULT_PARENT = "~/.ifcbflow/tls"
#: Validity of a batch script's certificate when the job's time limit is unknown: the longest limit most sites allow.
DEFAULT_VALIDITY = dt.timedelta(days=7)
#: Clock skew between nodes, allowed at both ends of a certificate's validity.
SKEW = dt.timedelta(minutes=5)
OWNER_FILE = "owner.json"
#: A run directory without an owner record older than this was left by a process killed while creating it.
UNOWNED_GRACE = dt.timedelta(minutes=10)


@dataclass(frozen=True)
class RunCertificates:
    """The three PEM files of one run; the same certificate serves the scheduler, the workers and the client."""

    directory: Path
    ca_file: Path
    cert_file: Path
    key_file: Path

    @classmethod
    def in_directory(cls, directory: Path) -> RunCertificates:
        return cls(directory, directory / "ca.pem", directory / "tls.pem", directory / "tls.key")

    def security(self) -> Security:
        """A `distributed.Security` that refuses unencrypted or unauthenticated peers."""
        cert, key = str(self.cert_file), str(self.key_file)
        return Security(
            require_encryption=True,
            tls_ca_file=str(self.ca_file),
            tls_scheduler_cert=cert,
            tls_scheduler_key=key,
            tls_worker_cert=cert,
            tls_worker_key=key,
            tls_client_cert=cert,
            tls_client_key=key,
        )

    def environment(self) -> dict[str, str]:
        """Dask config as environment variables, so `dask scheduler`, `dask worker` and any `Client()` in a batch
        script pick the certificates up without flags."""
        prefix = "DASK_DISTRIBUTED__COMM__"
        env = {f"{prefix}REQUIRE_ENCRYPTION": "True", f"{prefix}TLS__CA_FILE": str(self.ca_file)}
        for role in ("SCHEDULER", "WORKER", "CLIENT"):
            env[f"{prefix}TLS__{role}__CERT"] = str(self.cert_file)
            env[f"{prefix}TLS__{role}__KEY"] = str(self.key_file)
        return env

    def remove(self) -> None:
        """Delete the run's directory: the certificates are worthless after the run and should not linger."""
        shutil.rmtree(self.directory, ignore_errors=True)


def default_parent() -> Path:
    """The parent of per-run directories: IFCBFLOW_TLS_DIR, else ~/.ifcbflow/tls."""
    return Path(os.path.expanduser(os.environ.get("IFCBFLOW_TLS_DIR") or DEFAULT_PARENT))


def temporary_certificates(parent: str | Path | None = None) -> RunCertificates:
    """`Security.temporary()`'s key and certificate, written for worker jobs into a new private run directory owned
    by this process."""
    temporary = Security.temporary().get_tls_config_for_role("worker")
    certs = RunCertificates.in_directory(create_run_directory(parent, owner_pid=os.getpid()))
    _write_private(certs.ca_file, temporary["ca_file"].encode())
    _write_private(certs.cert_file, temporary["cert"].encode())
    _write_private(certs.key_file, temporary["key"].encode())
    logger.info("TLS certificate for this run in %s", certs.directory)
    return certs


def create_run_certificates(
    parent: str | Path | None = None, *, valid_for: dt.timedelta = DEFAULT_VALIDITY, owner_pid: int | None = None
) -> RunCertificates:
    """Make a fresh CA and a certificate it signs, valid for `valid_for`, in a new private directory under `parent`
    owned by process `owner_pid` (default: the parent process, i.e. the shell that runs `ifcbflow tls-certs`)."""
    now = dt.datetime.now(dt.UTC)
    not_before, not_after = now - SKEW, now + valid_for + SKEW
    directory = create_run_directory(parent, owner_pid=owner_pid or os.getppid(), expires=not_after)

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"ifcbflow run CA {directory.name}")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(cert_sign=True), critical=True)
        .sign(ca_key, hashes.SHA256())
    )

    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ifcbflow-dask")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(cert_sign=False), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False
        )
        # Dask does not check host names (workers move between nodes), but a SAN keeps strict TLS stacks content.
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(socket.gethostname())]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )

    certs = RunCertificates.in_directory(directory)
    _write_private(certs.ca_file, ca_cert.public_bytes(serialization.Encoding.PEM))
    _write_private(certs.cert_file, cert.public_bytes(serialization.Encoding.PEM))
    _write_private(
        certs.key_file,
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()),
    )
    logger.info("TLS certificates for this run in %s (valid until %s)", directory, not_after.isoformat("T", "minutes"))
    return certs


def create_run_directory(parent: str | Path | None, *, owner_pid: int, expires: dt.datetime | None = None) -> Path:
    """A new private directory under `parent`, recording its owner (host, process id and start time) and when its
    contents expire; first removes the directories that earlier runs could not (see `remove_stale_runs`)."""
    parent = Path(parent).expanduser() if parent else default_parent()
    parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    remove_stale_runs(parent)
    directory = Path(tempfile.mkdtemp(prefix="run-", dir=parent))  # mkdtemp makes it 0700
    owner = {
        "host": socket.gethostname(),
        "pid": owner_pid,
        "started": psutil.Process(owner_pid).create_time(),
        "expires": expires.timestamp() if expires else None,
    }
    _write_private(directory / OWNER_FILE, json.dumps(owner).encode())
    return directory


def remove_stale_runs(parent: Path) -> list[Path]:
    """Remove the run directories under `parent` whose owner process on this host is gone, whose certificates have
    expired, or which never got an owner record; returns them."""
    stale = [directory for directory in parent.glob("run-*") if directory.is_dir() and _is_stale(directory)]
    for directory in stale:
        logger.info("removing %s, left by a run that ended without cleaning up", directory)
        shutil.rmtree(directory, ignore_errors=True)
    return stale


def _is_stale(directory: Path) -> bool:
    now = dt.datetime.now(dt.UTC)
    try:
        owner = json.loads((directory / OWNER_FILE).read_text())
    except (OSError, ValueError):
        try:
            modified = dt.datetime.fromtimestamp(directory.stat().st_mtime, dt.UTC)
        except OSError:  # removed meanwhile by another run's sweep
            return False
        return now - modified > UNOWNED_GRACE
    if owner.get("expires") is not None and now.timestamp() > owner["expires"]:
        return True
    return owner.get("host") == socket.gethostname() and not _alive(owner.get("pid"), owner.get("started"))


def _alive(pid: int | None, started: float | None) -> bool:
    """Whether process `pid`, started at `started`, still runs (a recycled process id is another process)."""
    try:
        return pid is not None and abs(psutil.Process(pid).create_time() - float(started or 0)) < 1
    except psutil.Error:
        return False


def _key_usage(*, cert_sign: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=not cert_sign,
        data_encipherment=False,
        key_agreement=not cert_sign,
        key_cert_sign=cert_sign,
        crl_sign=cert_sign,
        encipher_only=False,
        decipher_only=False,
    )


def _write_private(path: Path, data: bytes) -> None:
    """Create `path` readable by its owner only, from the first byte (no window with wider permissions)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
