"""Payload protection at capture time: redaction hooks, the built-in redactor, size cap, depth limit."""

from __future__ import annotations

import hashlib
import json
import sys
import textwrap
from pathlib import Path

import pytest

from audit_plugin import AuditPlugin, Message, MessageAuditTrail, MessageBus, MessageType, hookimpl
from audit_plugin.exceptions import (
    FieldTypeError,
    InvalidFieldError,
    PayloadNotSerializableError,
    PayloadTooDeepError,
    PayloadTooLargeError,
)
from audit_plugin.privacy.capture import PayloadPolicy
from audit_plugin.privacy.redaction import MASK, FieldRedactor
from audit_plugin.storage.registry import extension_manager
from tests.helpers import make_message

SECRET = "hunter2-very-secret"


def _nested(levels: int) -> dict:
    payload: dict = {"leaf": 1}
    for _ in range(levels - 1):
        payload = {"d": payload}
    return payload


async def test_default_redactor_masks_sensitive_keys_anywhere(trail: MessageAuditTrail) -> None:
    payload = {
        "user": "ada",
        "Password": SECRET,
        "nested": {"API-Key": SECRET, "items": [{"token": {"value": SECRET}}, {"fine": "kept"}]},
        "headers": [["authorization", "not a key, kept"]],
    }
    original = json.loads(json.dumps(payload))
    message = make_message(payload=payload)
    await trail.log_message(message)
    record = await trail.get_message(message.message_id)
    assert record is not None
    assert record.payload == {
        "user": "ada",
        "Password": MASK,
        "nested": {"API-Key": MASK, "items": [{"token": MASK}, {"fine": "kept"}]},
        "headers": [["authorization", "not a key, kept"]],
    }
    assert SECRET not in json.dumps(record.payload)
    assert payload == original  # the caller's payload is never modified


def test_payload_without_sensitive_keys_is_not_copied() -> None:
    payload = {"a": [1, {"b": "c"}], "d": {"e": None}}
    assert FieldRedactor().redact(payload) is payload


def test_keys_remembered_as_plain_never_hide_a_sensitive_one() -> None:
    redactor = FieldRedactor()
    assert redactor.redact({"user": "ann", "note": {"user": "bob"}})["user"] == "ann"  # both keys now known plain
    payload = {"user": "ann", "note": {"user": "bob", "Api-Key": "k-1"}, "items": [{"user": "c", "token": "t"}]}

    masked = redactor.redact(payload)

    assert masked == {"user": "ann", "note": {"user": "bob", "Api-Key": MASK}, "items": [{"user": "c", "token": MASK}]}


async def test_plugin_rules_chain_and_run_before_the_builtin_redactor(database_url: str) -> None:
    calls: list[str] = []

    class DropEmail:
        @hookimpl
        def audit_redact(self, message: Message, payload: dict) -> dict | None:
            calls.append("email")
            if "email" not in payload:
                return None
            return {**payload, "email": "***@" + payload["email"].split("@")[1]}

    class TagSender:
        @hookimpl(tryfirst=True)
        def audit_redact(self, message: Message, payload: dict) -> dict:
            calls.append("tag")
            return {**payload, "sender": message.from_agent, "secret": SECRET}

    manager = extension_manager()
    manager.register(DropEmail())
    manager.register(TagSender())
    async with MessageAuditTrail(database_url, plugin_manager=manager) as trail:
        message = make_message(payload={"email": "ada@example.org"})
        await trail.log_message(message)
        record = await trail.get_message(message.message_id)
    assert calls == ["tag", "email"]
    assert record is not None
    assert record.payload == {"email": "***@example.org", "sender": "planner", "secret": MASK}


async def test_redaction_rule_returning_a_non_dict_is_a_typed_error(database_url: str) -> None:
    class Broken:
        @hookimpl
        def audit_redact(self, payload: dict) -> object:
            return ["not", "a", "dict"]

    manager = extension_manager()
    manager.register(Broken(), name="broken-rule")
    async with MessageAuditTrail(database_url, plugin_manager=manager) as trail:
        with pytest.raises(FieldTypeError, match="broken-rule"):
            await trail.log_message(make_message())
        assert await trail.query_messages() == []


async def test_redaction_rules_are_found_through_entry_points(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    site = tmp_path / "site"
    (site / "ssn_rules-1.0.dist-info").mkdir(parents=True)
    (site / "ssn_rules-1.0.dist-info" / "METADATA").write_text("Metadata-Version: 2.1\nName: ssn-rules\nVersion: 1.0\n")
    (site / "ssn_rules-1.0.dist-info" / "entry_points.txt").write_text("[audit_plugin]\nssn_rules = ssn_rules\n")
    (site / "ssn_rules.py").write_text(
        textwrap.dedent(
            """
            from audit_plugin import hookimpl

            @hookimpl
            def audit_redact(payload):
                if "note" in payload:
                    return {**payload, "note": payload["note"].replace("123-45-6789", "XXX-XX-XXXX")}
                return None
            """
        )
    )
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.delitem(sys.modules, "ssn_rules", raising=False)
    async with MessageAuditTrail(database_url) as trail:
        message = make_message(payload={"note": "ssn is 123-45-6789"})
        await trail.log_message(message)
        record = await trail.get_message(message.message_id)
    assert record is not None and record.payload == {"note": "ssn is XXX-XX-XXXX"}


async def test_custom_field_list_and_mask(database_url: str) -> None:
    policy = PayloadPolicy(redact_fields=frozenset({"Diagnosis"}), mask=None)
    async with MessageAuditTrail(database_url, payload_policy=policy) as trail:
        message = make_message(payload={"diagnosis": "flu", "password": "kept: not in this list"})
        await trail.log_message(message)
        record = await trail.get_message(message.message_id)
    assert record is not None and record.payload == {"diagnosis": None, "password": "kept: not in this list"}


async def test_bus_messages_are_redacted_before_they_are_stored(trail: MessageAuditTrail) -> None:
    bus = MessageBus()
    bus.register(AuditPlugin(trail))
    received: list[dict] = []

    async def worker(message: Message) -> None:
        received.append(message.payload)

    bus.subscribe("worker", worker)
    message = Message("planner", "worker", MessageType.COMMAND, {"login": {"user": "ada", "password": SECRET}})
    await bus.send(message)
    assert received == [{"login": {"user": "ada", "password": SECRET}}]  # delivery is untouched
    record = await trail.get_message(message.message_id)
    assert record is not None and record.payload == {"login": {"user": "ada", "password": MASK}}


async def test_oversized_payload_is_rejected_with_its_size(database_url: str) -> None:
    async with MessageAuditTrail(database_url, payload_policy=PayloadPolicy(max_bytes=100)) as trail:
        with pytest.raises(PayloadTooLargeError) as caught:
            await trail.log_message(make_message(payload={"text": "é" * 60}))
        assert caught.value.field == "payload"
        stored_form = json.dumps({"text": "é" * 60}, ensure_ascii=False, separators=(",", ":"))
        assert caught.value.size == len(stored_form.encode()) > 100
        assert isinstance(caught.value, ValueError)
        small = make_message(payload={"text": "é" * 30})
        await trail.log_message(small)
        assert [r.message_id for r in await trail.query_messages()] == [small.message_id]


async def test_oversized_payload_is_truncated_to_hash_and_size(database_url: str) -> None:
    payload = {"blob": "x" * 5000}
    text = json.dumps(payload, separators=(",", ":"))
    async with MessageAuditTrail(database_url, payload_policy=PayloadPolicy(max_bytes=1000, oversize="truncate")) as t:
        message = make_message(payload=payload)
        await t.log_message(message)
        record = await t.get_message(message.message_id)
    assert record is not None
    assert record.payload == {
        "$audit": "truncated",
        "size": len(text),
        "sha256": hashlib.sha256(text.encode()).hexdigest(),
    }


@pytest.mark.parametrize("payload", [_nested(9), {"list": [[[[[[[[["deep"]]]]]]]]]}], ids=["dicts", "lists"])
async def test_nesting_deeper_than_the_limit_is_a_typed_error(database_url: str, payload: dict) -> None:
    async with MessageAuditTrail(database_url, payload_policy=PayloadPolicy(max_depth=8)) as trail:
        with pytest.raises(PayloadTooDeepError) as caught:
            await trail.log_message(make_message(payload=payload))
        assert caught.value.field == "payload" and caught.value.max_depth == 8
        assert isinstance(caught.value, PayloadNotSerializableError)
        await trail.log_message(make_message(payload=_nested(8)))
        assert len(await trail.query_messages()) == 1


@pytest.mark.parametrize("redact_fields", [frozenset(), frozenset({"password"})], ids=["no-redactor", "redactor"])
def test_depth_is_checked_without_recursion_even_on_cycles(redact_fields: frozenset[str]) -> None:
    from audit_plugin.privacy.capture import PayloadCapture

    capture = PayloadCapture(extension_manager(), PayloadPolicy(redact_fields=redact_fields))
    cyclic: dict = {"a": []}
    cyclic["a"].append(cyclic)
    for payload in (cyclic, _nested(200_000)):
        with pytest.raises(PayloadTooDeepError):
            capture.encode(make_message(payload=payload))


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"max_bytes": 0}, "PayloadPolicy.max_bytes"),
        ({"max_depth": 0}, "PayloadPolicy.max_depth"),
        ({"max_depth": 10_000}, "PayloadPolicy.max_depth"),
        ({"oversize": "drop"}, "PayloadPolicy.oversize"),
        ({"redact_fields": "password"}, "PayloadPolicy.redact_fields"),
    ],
)
def test_policy_options_are_checked(options: dict, field: str) -> None:
    with pytest.raises((InvalidFieldError, FieldTypeError)) as caught:
        PayloadPolicy(**options)
    assert caught.value.field == field


def test_trail_rejects_a_policy_of_the_wrong_type(tmp_path: Path) -> None:
    with pytest.raises(FieldTypeError, match="payload_policy"):
        MessageAuditTrail(f"sqlite+aiosqlite:///{tmp_path / 'a.db'}", payload_policy={"max_bytes": 1})  # type: ignore[arg-type]
