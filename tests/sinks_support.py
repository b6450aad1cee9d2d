"""Real receivers for the sink tests: an rsyslog started by the test (TCP or TLS), and an OTLP/HTTP logs receiver.

rsyslog is Debian's (``apt-get install rsyslog rsyslog-gnutls``), run in
the foreground with a configuration written by the test: an ``imtcp`` input
on a free port of 127.0.0.1 (over ``gtls`` with certificates the test makes)
and a file output in RFC 5424 format. A test whose rsyslogd is missing is
skipped with :data:`RSYSLOG_SKIP` (``.ci/run`` installs it and fails on that
reason). The OTLP receiver is a small HTTP server decoding ``/v1/logs``
requests with ``opentelemetry-proto``, as a collector would.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

RSYSLOGD = shutil.which("rsyslogd") or "/usr/sbin/rsyslogd"
RSYSLOG_SKIP = "rsyslogd is not installed"
"""Skip reason of the rsyslog tests (``.ci/run`` greps for it)."""

LINE = re.compile(
    r"<(?P<pri>\d+)>1 (?P<timestamp>\S+) (?P<host>\S+) (?P<app>\S+) (?P<procid>\S+) (?P<msgid>\S+) "
    r"(?P<sd>-|\[(?:[^\]\\]|\\.)*\]) (?P<msg>.*)"
)


def require_rsyslog() -> None:
    if not Path(RSYSLOGD).exists():
        pytest.skip(f"{RSYSLOG_SKIP} (apt-get install -y rsyslog rsyslog-gnutls)")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, up: bool = True, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if (sock.connect_ex(("127.0.0.1", port)) == 0) is up:
                return
        time.sleep(0.05)
    raise RuntimeError(f"port {port} did not {'open' if up else 'close'} within {timeout}s")


@dataclass(frozen=True)
class Certificates:
    """A CA and a server certificate for 127.0.0.1 it signed (PEM files)."""

    ca: Path
    cert: Path
    key: Path


def make_certificates(directory: Path, name: str = "ca") -> Certificates:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    directory.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.UTC)

    def build(subject: str, issuer: Any, issuer_key: Any, key: Any, *, ca: bool) -> Any:
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
            .issuer_name(issuer)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        )
        if not ca:
            import ipaddress

            builder = builder.add_extension(
                x509.SubjectAlternativeName(
                    [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
                ),
                critical=False,
            )
        return builder.sign(issuer_key, hashes.SHA256())

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"audit-plugin test {name}")])
    ca_cert = build(f"audit-plugin test {name}", ca_name, ca_key, ca_key, ca=True)
    server_key = ec.generate_private_key(ec.SECP256R1())
    server_cert = build("127.0.0.1", ca_name, ca_key, server_key, ca=False)
    paths = Certificates(directory / f"{name}.pem", directory / f"{name}-server.pem", directory / f"{name}-server.key")
    paths.ca.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    paths.cert.write_bytes(server_cert.public_bytes(serialization.Encoding.PEM))
    paths.key.write_bytes(
        server_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return paths


@dataclass
class Rsyslog:
    """One rsyslogd receiving on ``port`` and writing each message as a line of ``log``."""

    directory: Path
    port: int
    tls: Certificates | None = None
    process: subprocess.Popen[bytes] | None = None

    @property
    def log(self) -> Path:
        return self.directory / "received.log"

    def config(self) -> str:
        lines = [f'global(workDirectory="{self.directory}" maxMessageSize="1m")']
        if self.tls is None:
            lines.append('module(load="imtcp")')
        else:
            lines.append(
                f'global(DefaultNetstreamDriver="gtls" DefaultNetstreamDriverCAFile="{self.tls.ca}" '
                f'DefaultNetstreamDriverCertFile="{self.tls.cert}" DefaultNetstreamDriverKeyFile="{self.tls.key}")'
            )
            lines.append(
                'module(load="imtcp" StreamDriver.Name="gtls" StreamDriver.Mode="1" StreamDriver.Authmode="anon")'
            )
        lines.append(f'input(type="imtcp" port="{self.port}" address="127.0.0.1")')
        lines.append(f'action(type="omfile" file="{self.log}" template="RSYSLOG_SyslogProtocol23Format")')
        return "\n".join(lines) + "\n"

    def start(self) -> None:
        conf = self.directory / "rsyslog.conf"
        conf.write_text(self.config())
        output = open(self.directory / "rsyslogd.out", "ab")  # noqa: SIM115 (the process keeps it)
        self.process = subprocess.Popen(
            [RSYSLOGD, "-n", "-f", str(conf), "-i", str(self.directory / "rsyslogd.pid")],
            stdout=output,
            stderr=output,
        )
        output.close()
        try:
            wait_for_port(self.port)
        except RuntimeError:
            self.stop()
            raise RuntimeError((self.directory / "rsyslogd.out").read_text()) from None

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=30)
        self.process = None
        wait_for_port(self.port, up=False)

    def messages(self, count: int, timeout: float = 60) -> list[dict[str, Any]]:
        """The first ``count`` messages received (waiting for them), each parsed: header fields, SD text, JSON body."""
        deadline = time.monotonic() + timeout
        while True:
            lines = self.log.read_text(encoding="utf-8").splitlines() if self.log.exists() else []
            if len(lines) >= count or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert len(lines) >= count, f"rsyslog received {len(lines)} of {count} messages"
        parsed = []
        for line in lines:
            match = LINE.fullmatch(line)
            assert match is not None, line
            fields = match.groupdict()
            parsed.append({**fields, "document": json.loads(fields["msg"])})
        return parsed


@contextmanager
def rsyslog(directory: Path, *, tls: Certificates | None = None) -> Iterator[Rsyslog]:
    require_rsyslog()
    directory.mkdir(parents=True, exist_ok=True)
    server = Rsyslog(directory, free_port(), tls)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@dataclass
class OtlpReceiver:
    """An OTLP/HTTP logs endpoint on 127.0.0.1: decodes every request; ``fail_next`` requests get a 503."""

    port: int = 0
    records: list[tuple[Any, Any, Any]] = field(default_factory=list)
    """(resource, scope, log record) of every log record received, in order."""
    requests: int = 0
    fail_next: int = 0

    @property
    def url(self) -> str:
        return f"otlp+http://127.0.0.1:{self.port}"


@contextmanager
def otlp_receiver() -> Iterator[OtlpReceiver]:
    from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
        ExportLogsServiceRequest,
        ExportLogsServiceResponse,
    )

    receiver = OtlpReceiver()
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            with lock:
                receiver.requests += 1
                failing = receiver.fail_next > 0
                receiver.fail_next -= failing
            if failing or self.path != "/v1/logs":
                self.send_response(503 if failing else 404)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            request = ExportLogsServiceRequest.FromString(body)
            with lock:
                for resource_logs in request.resource_logs:
                    for scope_logs in resource_logs.scope_logs:
                        for record in scope_logs.log_records:
                            receiver.records.append((resource_logs.resource, scope_logs.scope, record))
            answer = ExportLogsServiceResponse().SerializeToString()
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    receiver.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


def any_value(value: Any) -> Any:
    """An OTLP ``AnyValue`` as the Python value it carries."""
    kind = value.WhichOneof("value")
    if kind is None:
        return None
    if kind == "kvlist_value":
        return {kv.key: any_value(kv.value) for kv in value.kvlist_value.values}
    if kind == "array_value":
        return [any_value(item) for item in value.array_value.values]
    return getattr(value, kind)
