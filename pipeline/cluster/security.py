"""Per-run TLS certificates for the Dask scheduler, its workers and the client.

A Dask scheduler executes whatever a connected client sends it. On a shared cluster, a plain `tcp://` scheduler on a
compute node is therefore open to every other user of that network. Each run gets its own CA and certificate: the
scheduler accepts only peers that present a certificate signed by that CA, and the CA's private key is never written
anywhere, so nobody (not even this process, later) can mint another one. The files live in a private directory
(0700, files 0600) on a file system the workers can read, which is the only thing that needs sharing.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import shutil
import socket
import tempfile
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from distributed.security import Security

logger = logging.getLogger(__name__)

#: Where per-run directories go unless told otherwise: the home directory is on the shared file system of
#: nearly every HPC cluster, and only its owner can read it. Override with IFCBFLOW_TLS_DIR or `--tls-dir`.
DEFAULT_PARENT = "~/.ifcbflow/tls"
VALID_DAYS = 14


@dataclass(frozen=True)
class RunCertificates:
    """The three PEM files of one run; the same certificate serves the scheduler, the workers and the client."""

    directory: Path
    ca_file: Path
    cert_file: Path
    key_file: Path

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


def create_run_certificates(parent: str | Path | None = None, *, days: int = VALID_DAYS) -> RunCertificates:
    """Make a fresh CA and a certificate it signs, in a new private directory under `parent`."""
    parent = Path(parent).expanduser() if parent else default_parent()
    parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    directory = Path(tempfile.mkdtemp(prefix="run-", dir=parent))  # mkdtemp makes it 0700
    now = dt.datetime.now(dt.UTC)
    not_before, not_after = now - dt.timedelta(minutes=5), now + dt.timedelta(days=days)

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

    certs = RunCertificates(
        directory=directory,
        ca_file=directory / "ca.pem",
        cert_file=directory / "tls.pem",
        key_file=directory / "tls.key",
    )
    _write_private(certs.ca_file, ca_cert.public_bytes(serialization.Encoding.PEM))
    _write_private(certs.cert_file, cert.public_bytes(serialization.Encoding.PEM))
    _write_private(
        certs.key_file,
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()),
    )
    logger.info("TLS certificates for this run in %s (valid %d days)", directory, days)
    return certs


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
