"""RFC 3161 anchoring against a local time-stamp authority: Debian's ``openssl ts`` behind a tiny HTTP responder."""

from __future__ import annotations

import base64
import http.server
import json
import shutil
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from audit_plugin import Message, MessageAuditTrail, MessageType
from audit_plugin.integrity.proof_bundle import check_bundle
from audit_plugin.integrity.timestamping import TimestampError, request_timestamp
from audit_plugin.integrity.tree_checkpoint import CheckpointPolicy
from tests.cli_support import assert_one_line_error, run_cli
from tests.test_cli_integrity import write_keys

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")

EXTENSIONS = """
[req]
distinguished_name = dn
prompt = no
[dn]
CN = Test Root CA
[ca]
basicConstraints = critical,CA:TRUE
keyUsage = critical,keyCertSign,cRLSign
subjectKeyIdentifier = hash
[tsa]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature
extendedKeyUsage = critical,timeStamping
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
"""
TSA_CONFIG = """
[tsa]
default_tsa = local
[local]
serial = {folder}/serial
signer_cert = {folder}/tsa.pem
signer_key = {folder}/tsa.key
signer_digest = sha256
default_policy = 1.3.6.1.4.1.55555.1
digests = sha256
accuracy = secs:1
ess_cert_id_alg = sha256
"""


def _openssl(*args: str, folder: Path) -> None:
    subprocess.run(["openssl", *args], cwd=folder, check=True, capture_output=True)


def make_authority(folder: Path, name: str) -> Path:
    """A CA, a TSA certificate it issued (critical EKU timeStamping), and the TSA's openssl configuration."""
    folder.mkdir()
    (folder / "x509.cnf").write_text(EXTENSIONS)
    (folder / "serial").write_text("01\n")
    (folder / "ts.cnf").write_text(TSA_CONFIG.format(folder=folder))
    ec = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes")
    _openssl("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "30", "-config", "x509.cnf",
             "-extensions", "ca", "-subj", f"/CN={name} CA", folder=folder)  # fmt: skip
    _openssl("req", *ec, "-keyout", "tsa.key", "-out", "tsa.csr", "-subj", f"/CN={name} TSA", folder=folder)
    _openssl("x509", "-req", "-in", "tsa.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial", "-out",
             "tsa.pem", "-days", "30", "-extfile", "x509.cnf", "-extensions", "tsa", folder=folder)  # fmt: skip
    return folder


@pytest.fixture
def authority(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """``(URL, CA certificate file)`` of a TSA answering on loopback for the test's duration."""
    folder = make_authority(tmp_path / "tsa", "Local")

    class Responder(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            query = self.rfile.read(int(self.headers["Content-Length"]))
            answer = subprocess.run(
                ["openssl", "ts", "-reply", "-config", "ts.cnf", "-queryfile", "/dev/stdin", "-out", "/dev/stdout"],
                cwd=folder,
                input=query,
                capture_output=True,
                check=True,
            ).stdout
            self.send_response(200)
            self.send_header("Content-Type", "application/timestamp-reply")
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Responder)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/tsa", folder / "ca.pem"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


async def test_a_time_stamped_checkpoint_is_checked_in_the_bundle(
    database_url: str, authority: tuple[str, Path], tmp_path: Path
) -> None:
    url, ca_file = authority
    key = Ed25519PrivateKey.generate()
    roots = [x509.load_pem_x509_certificate(ca_file.read_bytes())]
    policy = CheckpointPolicy(key, origin="ex.test/audit", tsa_url=url)
    async with MessageAuditTrail(database_url, checkpoint_policy=policy) as trail:
        message = Message("a", "b", MessageType.EVENT, {"x": 1})
        await trail.log_message(message)
        checkpoint = await trail.sign_checkpoint(key)
        assert checkpoint.timestamp is not None
        [stored] = await trail.tree_checkpoints()
        assert stored.timestamp == checkpoint.timestamp
        data = (await trail.prove(message.message_id)).to_json()
    verified = check_bundle(data, key.public_key(), tsa_roots=roots)
    assert verified.ok and verified.timestamp_verified and verified.timestamp is not None
    unverified = check_bundle(data, key.public_key())
    assert unverified.ok and not unverified.timestamp_verified

    other = make_authority(tmp_path / "other", "Other")
    foreign = [x509.load_pem_x509_certificate((other / "ca.pem").read_bytes())]
    refused = check_bundle(data, key.public_key(), tsa_roots=foreign)
    assert not refused.ok and "not signed by a TSA" in (refused.reason or "")

    document = json.loads(data)
    token = bytearray(base64.b64decode(document["checkpoint"]["timestamp"]))
    token[-20] ^= 1
    document["checkpoint"]["timestamp"] = base64.b64encode(bytes(token)).decode()
    assert not check_bundle(json.dumps(document), key.public_key(), tsa_roots=roots).ok


def test_the_cli_time_stamps_and_checks(database_url: str, authority: tuple[str, Path], tmp_path: Path) -> None:
    from tests.cli_support import seed_sample

    url, ca_file = authority
    seed_sample(database_url)
    private, public = write_keys(tmp_path)
    result = run_cli("checkpoints", "--signing-key", str(private), "--tsa-url", url, database_url=database_url)
    assert result.returncode == 0, result.stderr
    assert "(time-stamped)" in result.stdout
    bundle = tmp_path / "q1.json"
    assert run_cli("prove", "q1", "-o", str(bundle), database_url=database_url).returncode == 0
    checked = run_cli("check-proof", str(bundle), "--public-key", str(public), "--tsa-ca", str(ca_file))
    assert checked.returncode == 0, checked.stderr
    assert "(verified)" in checked.stdout
    assert_one_line_error(run_cli("check-proof", str(bundle), "--public-key", str(public), "--tsa-ca", str(bundle)), 2)


def test_an_unreachable_or_wrong_authority_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(TimestampError, match="did not answer"):
        request_timestamp("http://127.0.0.1:9/tsa", "note\n", timeout=5)
    with pytest.raises(TimestampError, match="http"):
        request_timestamp("file:///etc/passwd", "note\n")
