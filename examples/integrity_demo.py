"""Integrity and privacy in one run: redaction, encryption, erasure, lifecycle history, verify, checkpoints.

Needs the ``crypto`` extra (``cryptography``)::

    .venv/bin/pip install -e ".[crypto]"
    .venv/bin/python examples/integrity_demo.py      # writes into a temporary folder
"""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import text

from audit_plugin import AuditPlugin, Message, MessageAuditTrail, MessageBus, MessageType
from audit_plugin.privacy.crypto import LocalKeyFileProvider


async def main(folder: Path) -> None:
    url = f"sqlite+aiosqlite:///{folder / 'audit.db'}"
    keys = LocalKeyFileProvider(folder / "master.key")  # created (mode 0600) on first use
    async with MessageAuditTrail(url, key_provider=keys) as trail:
        bus = MessageBus(max_retries=2)
        bus.register(AuditPlugin(trail))
        attempts = 0

        async def billing(message: Message) -> None:
            nonlocal attempts
            attempts += 1
            if attempts == 1:
                raise TimeoutError("billing backend slow")

        bus.subscribe("billing", billing)
        receipt = await bus.send(
            Message(
                "support-bot",
                "billing",
                MessageType.COMMAND,
                {"customer": "c-42", "card": {"card_number": "4111 1111 1111 1111"}, "refund": 19.99},
                headers={"audit-subject": "customer-42"},
            )
        )
        record = await trail.get_message(receipt.message_id)
        print("stored payload, decrypted:", record.payload)
        async with trail.backend.engine.connect() as conn:
            raw = (await conn.execute(text("SELECT payload_json FROM message_audit_log"))).scalar()
        print("what the database holds:  ", raw[:90] + "…")

        print("\nlifecycle:")
        for step in await trail.get_message_history(receipt.message_id):
            spent = f"{step.seconds * 1000:.1f} ms" if step.seconds is not None else "-"
            error = f"  {step.error}" if step.error else ""
            print(f"  #{step.sequence} {step.kind:<6} {step.status:<9} retry={step.retry_count} {spent:>9}{error}")

        signing_key = Ed25519PrivateKey.generate()
        checkpoint = await trail.checkpoint(signing_key=signing_key)
        print("\ncheckpoint:", checkpoint.to_json())
        print("signature valid:", checkpoint.signature_valid(signing_key.public_key()))

        print("\nerase customer-42:", await trail.erase_subject("customer-42"), "data key destroyed")
        print("payload now:", (await trail.get_message(receipt.message_id)).payload)
        print("verify:", await trail.verify(against=checkpoint))

        async with trail.backend.engine.begin() as conn:
            await conn.execute(text("UPDATE message_audit_events SET status = 'FAILED' WHERE sequence = 3"))
        print("after editing entry 3 behind the trail's back:", await trail.verify())


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as folder:
        asyncio.run(main(Path(folder)))
