"""Certificates made in the test: a throwaway CA, a server certificate for 127.0.0.1/localhost, a client certificate."""

from __future__ import annotations

import datetime
import ipaddress
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


@dataclass(frozen=True)
class Certificates:
    """PEM files in one directory: ``ca``, ``server_cert``/``server_key``, ``client_cert``/``client_key``."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    other_ca: Path
    """A second CA that signed nothing here: trusting it must fail the handshake."""


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _write_key(key: ec.EllipticCurvePrivateKey, path: Path) -> None:
    path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    path.chmod(0o600)


def _ca(common_name: str) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(_name(common_name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(True, False, False, False, False, True, True, False, False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def _leaf(
    ca_key: ec.EllipticCurvePrivateKey, ca_cert: x509.Certificate, common_name: str, *, server: bool
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH]),
            critical=False,
        )
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
    )
    if server:
        names = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    return key, builder.sign(ca_key, hashes.SHA256())


def make_certificates(directory: Path) -> Certificates:
    """A CA, a server certificate (localhost, 127.0.0.1) and a client certificate, written under ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    ca_key, ca_cert = _ca("audit-plugin test CA")
    server_key, server_cert = _leaf(ca_key, ca_cert, "localhost", server=True)
    client_key, client_cert = _leaf(ca_key, ca_cert, "audit-client", server=False)
    _, other_cert = _ca("another CA")
    files = Certificates(
        ca=directory / "ca.pem",
        server_cert=directory / "server.pem",
        server_key=directory / "server.key",
        client_cert=directory / "client.pem",
        client_key=directory / "client.key",
        other_ca=directory / "other-ca.pem",
    )
    pem = serialization.Encoding.PEM
    files.ca.write_bytes(ca_cert.public_bytes(pem))
    files.server_cert.write_bytes(server_cert.public_bytes(pem))
    files.client_cert.write_bytes(client_cert.public_bytes(pem))
    files.other_ca.write_bytes(other_cert.public_bytes(pem))
    _write_key(server_key, files.server_key)
    _write_key(client_key, files.client_key)
    return files


POSTGRES_BIN = Path("/usr/lib/postgresql/15/bin")
PASSWORD = "pg-test-password-7d1f"
"""The throwaway cluster's superuser password (a planted secret the tests look for in every output)."""


def can_run_postgres() -> bool:
    """A throwaway cluster needs the server binaries and, as root, the ``postgres`` user to run them as."""
    import os
    import pwd
    import shutil

    if not (POSTGRES_BIN / "postgres").exists() or shutil.which("runuser") is None:
        return False
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        return os.geteuid() != 0
    return True


@contextmanager
def ssl_postgres(directory: Path, certs: Certificates) -> Iterator[int]:
    """A PostgreSQL cluster on a free port that accepts only TLS and a scram password; yields its port."""
    import os
    import pwd
    import shutil
    import socket
    import subprocess
    import time

    from tests.jetstream_support import free_port

    as_postgres: list[str] = []
    owner = None
    if os.geteuid() == 0:
        as_postgres = ["runuser", "-u", "postgres", "--"]
        owner = pwd.getpwnam("postgres")
    data = directory / "pgdata"
    directory.mkdir(parents=True, exist_ok=True)
    password_file = directory / "pw"
    password_file.write_text(PASSWORD + "\n")
    key = directory / "server.key"
    shutil.copy(certs.server_key, key)
    for path in (directory, password_file, key, certs.server_cert, certs.ca):
        if owner is not None:
            os.chown(path, owner.pw_uid, owner.pw_gid)
    key.chmod(0o600)
    for parent in list(directory.parents)[:-1]:  # the postgres user must reach the directory
        parent.chmod(parent.stat().st_mode | 0o011)
    subprocess.run(
        [*as_postgres, str(POSTGRES_BIN / "initdb"), "-D", str(data), "-U", "postgres", "-A", "scram-sha-256",
         f"--pwfile={password_file}"],
        check=True, capture_output=True,
    )  # fmt: skip
    (data / "pg_hba.conf").write_text(
        "local all all scram-sha-256\nhostssl all all 127.0.0.1/32 scram-sha-256\nhostnossl all all 0.0.0.0/0 reject\n"
    )
    port = free_port()
    log = open(directory / "postgres.log", "ab")  # noqa: SIM115 (closed below)
    server = subprocess.Popen(
        [*as_postgres, str(POSTGRES_BIN / "postgres"), "-D", str(data), "-p", str(port), "-k", str(directory),
         "-c", "listen_addresses=127.0.0.1", "-c", "ssl=on", "-c", f"ssl_cert_file={certs.server_cert}",
         "-c", f"ssl_key_file={key}", "-c", "fsync=off"],
        stdout=log, stderr=log,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while True:
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", port)) == 0:
                    break
            if server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the TLS PostgreSQL did not start: {(directory / 'postgres.log').read_text()}")
            time.sleep(0.1)
        time.sleep(0.5)  # listening before it accepts connections: give it a moment to finish starting
        yield port
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        log.close()
