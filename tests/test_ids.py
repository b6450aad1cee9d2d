"""Ids typed back (audit_plugin.reading.ids): what the command line and the viewer both resolve, on every backend."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from audit_plugin import Message, MessageAuditTrail, MessageType
from audit_plugin.exceptions import AmbiguousIdError, InvalidFieldError, UnknownIdError
from audit_plugin.reading.ids import AMBIGUOUS_SHOWN, find_conversation, find_correlation_id, find_message

MESSAGES = {  # message id -> correlation id
    "0190a1b2-aaaa-7000-8000-00000000bed0": "demo-f9bc0001",
    "0190a1b2-aaaa-7000-8000-0000000000f2": "demo-f9bc0001",
    "0190a1b2-bbbb-7000-8000-000000c0ffee": "demo-77aa0002",
    "Case-Sensitive": "Conv-X",
    "literal%_*?[id]": "conv-%_",
    "\ud7ffedge-\ud7ff": "\ud7ff-conv",  # the last character before the surrogates: a range's end skips them
    "\U0010ffffedge\U0010ffff": "\U0010ffff\U0010ffff",  # the last character: a range with no end
    "\ue000edge": None,
    "lonely-message": None,
}
CORRELATIONS = sorted({cid for cid in MESSAGES.values() if cid is not None})


def model_conversation(text: str) -> tuple[str, str]:
    """What find_conversation should answer, computed from the definition in its docstring."""
    if text in CORRELATIONS:
        return ("conversation", text)
    if text in MESSAGES:
        return ("conversation", MESSAGES[text] or text)
    correlations = [cid for cid in CORRELATIONS if cid.startswith(text)]
    messages = sorted(mid for mid in MESSAGES if mid.startswith(text) or mid.endswith(text))
    if not correlations and not messages:
        return ("unknown", text)
    if len(correlations) + len(messages) > 1:
        return ("ambiguous", ",".join([*correlations, *messages][:AMBIGUOUS_SHOWN]))
    if correlations:
        return ("conversation", correlations[0])
    return ("conversation", MESSAGES[messages[0]] or messages[0])


def model_message(text: str) -> tuple[str, str]:
    if text in MESSAGES:
        return ("message", text)
    messages = sorted(mid for mid in MESSAGES if mid.startswith(text) or mid.endswith(text))
    if not messages:
        return ("unknown", text)
    return ("ambiguous", ",".join(messages[:AMBIGUOUS_SHOWN])) if len(messages) > 1 else ("message", messages[0])


async def seeded(database_url: str) -> MessageAuditTrail:
    trail = MessageAuditTrail(database_url)
    await trail.initialize()
    for message_id, correlation_id in MESSAGES.items():
        await trail.log_message(
            Message("a", "b", MessageType.EVENT, {}, message_id=message_id, correlation_id=correlation_id)
        )
    return trail


async def answer(lookup: str, trail: MessageAuditTrail, text: str) -> tuple[str, str]:
    try:
        if lookup == "conversation":
            return ("conversation", (await find_conversation(trail, text)).id)
        return ("message", (await find_message(trail, text)).message_id)
    except UnknownIdError as exc:
        assert exc.fragment == text and repr(text) in str(exc)
        return ("unknown", text)
    except AmbiguousIdError as exc:
        assert "is ambiguous" in str(exc) and all(match in str(exc) for match in exc.matches)
        return ("ambiguous", ",".join(exc.matches))


fragments = st.sampled_from([*MESSAGES, *CORRELATIONS]).flatmap(
    lambda whole: st.integers(1, len(whole)).flatmap(
        lambda n: st.sampled_from([whole[:n], whole[-n:], whole, whole.upper(), whole[:n] + "x"])
    )
)


def test_every_typed_id_resolves_as_the_rules_say(database_url: str) -> None:
    with asyncio.Runner() as runner:
        trail = runner.run(seeded(database_url))

        @settings(max_examples=250, deadline=None)
        @given(text=fragments | st.text(min_size=1, max_size=12), lookup=st.sampled_from(["conversation", "message"]))
        def check(text: str, lookup: str) -> None:
            try:
                got = runner.run(answer(lookup, trail, text))
            except InvalidFieldError as exc:  # only text no id can be: NUL, surrogates
                assert exc.field == "id", exc
                return
            expected = model_conversation(text) if lookup == "conversation" else model_message(text)
            assert got == expected, (lookup, text)

        try:
            check()
        finally:
            runner.run(trail.close())


async def test_short_ids_starts_and_ambiguity(database_url: str) -> None:
    trail = await seeded(database_url)
    try:
        assert (await find_message(trail, "c0ffee")).message_id.endswith("c0ffee")  # the tail tables show
        assert (await find_conversation(trail, "c0ffee")).id == "demo-77aa0002"
        assert (await find_conversation(trail, "demo-f9bc")).id == "demo-f9bc0001"
        lone = await find_conversation(trail, "lonely")
        assert lone.correlation_id is None and lone.lone is not None and lone.id == "lonely-message"
        with pytest.raises(AmbiguousIdError) as ambiguous:
            await find_conversation(trail, "demo-")
        assert ambiguous.value.correlation_ids == ["demo-77aa0002", "demo-f9bc0001"] and not ambiguous.value.more
        with pytest.raises(AmbiguousIdError):
            await find_message(trail, "0190a1b2-aaaa")
        with pytest.raises(UnknownIdError):
            await find_message(trail, "demo-f9bc")  # a conversation, not a message
        with pytest.raises(UnknownIdError):
            await find_conversation(trail, "case-sensitive")  # case counts, on SQLite too
        for wildcard in ("%", "_", "*", "?", "[", "conv-_"):
            with pytest.raises(UnknownIdError):
                await find_message(trail, wildcard)
        assert (await find_conversation(trail, "conv-%")).id == "conv-%_"
        with pytest.raises(InvalidFieldError) as empty:
            await find_conversation(trail, "")
        assert empty.value.field == "id"
        assert await find_correlation_id(trail, "demo-77") == "demo-77aa0002"
        assert await find_correlation_id(trail, "not-started-yet") == "not-started-yet"
        assert await find_correlation_id(trail, "lonely") == "lonely"
    finally:
        await trail.close()
