"""NATS and PostgreSQL transport security against real servers started by the tests (authorization, TLS).

Certificates are made in the test (:mod:`tests.tls_support`); a wrong
credential or a failed TLS handshake is a typed error naming the server and
the reason, and never the secret.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from audit_plugin import MessageAuditTrail
from audit_plugin.exceptions import InvalidFieldError, StoreAuthenticationError
from audit_plugin.jetstream.address import parse_address
from audit_plugin.jetstream.ingest import JetStreamIngester
from audit_plugin.jetstream.stream import connect
from tests.jetstream_support import nats_server, produce
from tests.tls_support import PASSWORD, Certificates, can_run_postgres, make_certificates, ssl_postgres

SECRET = "nats-Pa55-planted-71c3"
TOKEN = "nats-token-planted-0e9a4f"


@pytest.fixture
def certs(tmp_path: Path) -> Certificates:
    return make_certificates(tmp_path / "certs")


async def _connects(url: str) -> None:
    client, _ = await connect(parse_address(url), name="test")
    await client.close()


async def _refused(url: str, *fragments: str) -> StoreAuthenticationError:
    with pytest.raises(StoreAuthenticationError) as refused:
        await _connects(url)
    message = str(refused.value)
    assert SECRET not in message and TOKEN not in message and "127.0.0.1" in message
    for fragment in fragments:
        assert fragment in refused.value.reason, refused.value.reason
    return refused.value


async def test_nats_user_and_password(tmp_path: Path) -> None:
    with nats_server(tmp_path / "n", "--user", "alice", "--pass", SECRET) as node:
        await _connects(f"nats://alice:{SECRET}@127.0.0.1:{node.port}/s")
        await _refused(f"nats://alice:wrong-password-0@127.0.0.1:{node.port}/s", "authorization violation")
        await _refused(f"nats://127.0.0.1:{node.port}/s", "authorization violation")


async def test_nats_token(tmp_path: Path) -> None:
    with nats_server(tmp_path / "n", "--auth", TOKEN) as node:
        await _connects(f"nats://{TOKEN}@127.0.0.1:{node.port}/s")
        await _refused(f"nats://not-the-token-000@127.0.0.1:{node.port}/s", "authorization violation")


async def test_nats_nkey_seed_and_creds_options(tmp_path: Path) -> None:
    nkeys = pytest.importorskip("nkeys")
    seed = nkeys.encode_seed(os.urandom(32), nkeys.PREFIX_BYTE_USER)
    public = nkeys.from_seed(bytearray(seed)).public_key.decode()
    seed_file = tmp_path / "user.nk"
    seed_file.write_bytes(seed)
    config = tmp_path / "nkey.conf"
    config.write_text(f"authorization {{ users = [ {{ nkey: {public} }} ] }}\n")
    with nats_server(tmp_path / "n", "-c", str(config)) as node:
        await _connects(f"nats://127.0.0.1:{node.port}/s?nkey={seed_file}")
        other = tmp_path / "other.nk"
        other.write_bytes(nkeys.encode_seed(os.urandom(32), nkeys.PREFIX_BYTE_USER))
        await _refused(f"nats://127.0.0.1:{node.port}/s?nkey={other}", "authorization violation")
    with pytest.raises(InvalidFieldError, match="creds"):
        parse_address(f"nats://127.0.0.1/s?creds={tmp_path / 'missing.creds'}")
    with pytest.raises(InvalidFieldError, match="one way"):
        parse_address(f"nats://u:p@127.0.0.1/s?nkey={seed_file}")


def _tls_server_args(certs: Certificates, *, verify_clients: bool) -> list[str]:
    args = ["--tls", "--tlscert", str(certs.server_cert), "--tlskey", str(certs.server_key)]
    return [*args, "--tlsverify", "--tlscacert", str(certs.ca)] if verify_clients else args


async def test_nats_tls_with_a_client_certificate(tmp_path: Path, certs: Certificates) -> None:
    with nats_server(tmp_path / "n", *_tls_server_args(certs, verify_clients=True)) as node:
        client = f"tls_cert={certs.client_cert}&tls_key={certs.client_key}"
        await _connects(f"tls://127.0.0.1:{node.port}/s?tls_ca={certs.ca}&{client}")
        await _refused(f"tls://127.0.0.1:{node.port}/s?tls_ca={certs.ca}", "TLS")  # no client certificate
        await _refused(f"tls://127.0.0.1:{node.port}/s?tls_ca={certs.other_ca}&{client}", "certificate")
        await _refused(f"nats://127.0.0.1:{node.port}/s", "TLS")  # the system's CAs do not know the test CA


async def test_a_trail_and_an_ingester_over_tls_with_a_password(tmp_path: Path, certs: Certificates) -> None:
    args = [*_tls_server_args(certs, verify_clients=False), "--user", "alice", "--pass", SECRET]
    with nats_server(tmp_path / "n", *args) as node:
        url = f"tls://alice:{SECRET}@127.0.0.1:{node.port}/secure{node.port}?tls_ca={certs.ca}"
        ids = await produce(url, 20, "producer", "commit")
        async with MessageAuditTrail(f"sqlite+aiosqlite:///{tmp_path / 'store.db'}") as store:
            stats = await JetStreamIngester(url, store).run(exit_when_idle=True)
            assert stats.records == 20
            assert {r.message_id for r in await store.query_messages()} == set(ids)
            assert (await store.verify()).ok


def test_tls_and_auth_options_are_checked(tmp_path: Path, certs: Certificates) -> None:
    with pytest.raises(InvalidFieldError, match="tls_cert and tls_key"):
        parse_address(f"tls://127.0.0.1/s?tls_cert={certs.client_cert}")
    with pytest.raises(InvalidFieldError, match="no file"):
        parse_address(f"tls://127.0.0.1/s?tls_ca={tmp_path / 'nope.pem'}")
    with pytest.raises(InvalidFieldError, match="unknown option"):
        parse_address("nats://127.0.0.1/s?tls_verify=0")
    with pytest.raises(InvalidFieldError, match="host name"):
        parse_address("tls://127.0.0.1/s?tls_hostname=a b")
    assert parse_address(f"nats://127.0.0.1/s?tls_ca={certs.ca}").tls is not None
    assert parse_address("nats://127.0.0.1/s").tls is None


# -- PostgreSQL --------------------------------------------------------------------------------


async def test_sslmode_require_against_a_server_without_tls_is_a_clear_error(database_url: str) -> None:
    if not database_url.startswith("postgresql"):
        pytest.skip("PostgreSQL only")
    with pytest.raises(StoreAuthenticationError) as refused:
        async with MessageAuditTrail(database_url + "?sslmode=require"):
            pass
    assert "does not accept TLS" in refused.value.reason


def test_postgres_tls_parameters_are_checked(tmp_path: Path) -> None:
    pytest.importorskip("audit_plugin_postgres")
    from audit_plugin_postgres.tls import split_ssl

    base = "postgresql+asyncpg://audit@127.0.0.1/audit"
    (tmp_path / "client.key").write_text("not a key")
    assert split_ssl(base) == (base, None)
    assert split_ssl(base + "?sslmode=disable") == (base, False)
    assert split_ssl(base + "?sslmode=prefer")[1] == "prefer"
    for query, fragment in (
        ("sslmode=sometimes", "sslmode"),
        (f"sslmode=verify-full&sslrootcert={tmp_path / 'no.pem'}", "sslrootcert"),
        (f"sslmode=require&sslkey={tmp_path / 'client.key'}", "sslcert and sslkey"),
    ):
        with pytest.raises(InvalidFieldError, match=fragment):
            MessageAuditTrail(f"{base}?{query}")


@pytest.mark.skipif(not can_run_postgres(), reason="needs the PostgreSQL server binaries to start a cluster")
async def test_postgres_over_tls_verified_and_refused(tmp_path: Path, certs: Certificates) -> None:
    pytest.importorskip("audit_plugin_postgres")
    with ssl_postgres(tmp_path / "pg", certs) as port:
        base = f"postgresql+asyncpg://postgres:{PASSWORD}@127.0.0.1:{port}/postgres"
        async with MessageAuditTrail(f"{base}?sslmode=verify-full&sslrootcert={certs.ca}") as trail:
            assert await trail.count_messages() == 0
        for query, fragment in (
            ("sslmode=disable", "no encryption"),
            (f"sslmode=verify-full&sslrootcert={certs.other_ca}", "certificate"),
        ):
            with pytest.raises(StoreAuthenticationError) as refused:
                async with MessageAuditTrail(f"{base}?{query}"):
                    pass
            assert fragment in refused.value.reason and PASSWORD not in str(refused.value)
        wrong = f"postgresql+asyncpg://postgres:wrong-password@127.0.0.1:{port}/postgres?sslmode=require"
        with pytest.raises(StoreAuthenticationError) as refused:
            async with MessageAuditTrail(wrong):
                pass
        assert "password authentication failed" in refused.value.reason
        assert "wrong-password" not in str(refused.value)
