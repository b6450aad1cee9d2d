"""The viewer's signed checkpoints and proof downloads."""

from __future__ import annotations

from urllib.parse import quote

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from audit_plugin import MessageAuditTrail
from audit_plugin.integrity.proof_bundle import check_bundle
from tests.web.sample import Sample
from tests.web.test_http import client_for


async def test_checkpoints_are_listed_and_a_message_offers_its_proof(
    database_url: str, writer: MessageAuditTrail, sample: Sample
) -> None:
    message_id = sample.conversation_ids[0]
    async with client_for(database_url) as client:
        page = await client.get("/integrity")
        assert page.status_code == 200 and "None stored yet" in page.text
        missing = await client.get(f"/proof?id={quote(message_id)}")
        assert missing.status_code == 404 and "no stored checkpoint covers" in missing.text
    key = Ed25519PrivateKey.generate()
    checkpoint = await writer.sign_checkpoint(key, origin="example.com/audit")
    async with client_for(database_url) as client:
        page = await client.get("/integrity")
        assert "example.com/audit" in page.text and checkpoint.body.root.hex()[:16] in page.text
        message = await client.get(f"/message?id={quote(message_id)}")
        assert "/proof?id=" in message.text
        download = await client.get(f"/proof?id={quote(message_id)}")
        assert download.status_code == 200 and download.headers["content-type"] == "application/json"
        assert "attachment" in download.headers["content-disposition"]
        assert check_bundle(download.content, key.public_key()).ok
        assert (await client.get("/proof?id=")).status_code == 400
