"""Export sinks against real receivers: rsyslog (TCP and TLS), an OTLP/HTTP receiver, JSON Lines files.

The in-process sink (the ``audit_batch_committed`` hook) and ``audit-plugin
export --follow`` (reading the store) must deliver the same documents; a
destination that is down must never slow or break the trail, and what is
lost is counted.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from audit_plugin import Message, MessageAuditTrail, MessageStatus, MessageType
from audit_plugin.exceptions import InvalidFieldError
from audit_plugin.sinks import Backoff, ExportSink, open_sender
from audit_plugin.sinks.delivery import ExportCounters
from audit_plugin.sinks.follow import StateFile, follow_store
from tests.cli_support import assert_one_line_error, run_cli
from tests.sinks_support import any_value, free_port, make_certificates, otlp_receiver, rsyslog

FAST = Backoff(first=0.05, factor=2, most=0.5)
"""Retry quickly in tests (the delays are waits between retries, not deadlines: load only slows them)."""

TRACE_ID, SPAN_ID = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"


async def write_story(trail: MessageAuditTrail, tag: str = "s") -> list[str]:
    """A delivered query (traced) with a retry, its reply, a failed command and an expired event."""
    query = Message("planner", "worker", MessageType.QUERY, {"ask": "stock?", "tag": tag}, correlation_id=f"conv-{tag}")
    await trail.log_message(query, trace_id=TRACE_ID, span_id=SPAN_ID)
    await trail.record_retry(query.message_id, 1, "TimeoutError: first try")
    await trail.update_message_status(query.message_id, MessageStatus.DELIVERED)
    reply = Message(
        "worker", "planner", MessageType.RESPONSE, {"stock": 4}, correlation_id=f"conv-{tag}", reply_to=query.message_id
    )
    await trail.log_message(reply)
    await trail.update_message_status(reply.message_id, MessageStatus.DELIVERED)
    command = Message("planner", 'rep"orter]', MessageType.COMMAND, {"publish": "plan ✓"}, correlation_id=f"conv-{tag}")
    await trail.log_message(command)
    await trail.update_message_status(command.message_id, MessageStatus.FAILED, error_message="PermissionError: ro")
    event = Message("planner", "worker", MessageType.EVENT, {}, ttl_seconds=1)
    await trail.log_message(event)
    await trail.update_message_status(event.message_id, MessageStatus.EXPIRED, error_message="ttl of 1s elapsed")
    await trail.flush()
    return [query.message_id, reply.message_id, command.message_id, event.message_id]


STORY_ENTRIES = 9
"""Lifecycle entries :func:`write_story` appends: 4 records, 1 retry, 4 outcomes."""


async def followed(trail: MessageAuditTrail, url: str, after: int = 0) -> tuple[int, Any]:
    """Run the store follower once over what is stored (as ``export --follow --exit-when-idle`` does)."""
    sender = open_sender(url)
    counters = ExportCounters(sender.address)
    try:
        position = await follow_store(
            trail, sender, counters, after=after, stop=asyncio.Event(), exit_when_idle=True, backoff=FAST
        )
    finally:
        await sender.close()
    return position, counters.stats


# -- syslog -------------------------------------------------------------------------------


async def test_syslog_over_tcp_receives_every_entry_as_rfc5424_the_same_from_hook_and_store(
    database_url: str, tmp_path: Path
) -> None:
    with rsyslog(tmp_path / "rsyslog") as receiver:
        url = f"syslog+tcp://127.0.0.1:{receiver.port}?app_name=agents&facility=local3"
        async with MessageAuditTrail(database_url) as trail:
            sink = ExportSink(url, backoff=FAST).attach(trail)
            ids = await write_story(trail)
            await sink.flush(60)
            await sink.close()
            hooked = receiver.messages(STORY_ENTRIES)
            position, stats = await followed(trail, url)
        assert stats.sent == STORY_ENTRIES and position == STORY_ENTRIES
        polled = receiver.messages(2 * STORY_ENTRIES)[STORY_ENTRIES:]
    assert sink.stats.sent == STORY_ENTRIES and sink.stats.dropped == 0
    assert [m["document"] for m in hooked] == [m["document"] for m in polled]  # one shape, either way in
    documents = [m["document"] for m in hooked]
    assert [d["sequence"] for d in documents] == list(range(1, STORY_ENTRIES + 1))
    assert [d["event"] for d in documents] == ["record", "status", "status", "record", "status"] + [
        "record",
        "status",
    ] * 2
    query = documents[0]["record"]
    assert (query["message_id"], query["status"], query["trace_id"]) == (ids[0], "PENDING", TRACE_ID)
    assert query["payload"] == {"ask": "stock?", "tag": "s"}
    assert documents[1]["retry_count"] == 1 and documents[1]["error_message"] == "TimeoutError: first try"
    for message in hooked:
        assert message["app"] == "agents" and message["msgid"] == message["document"]["event"]
        assert message["timestamp"] == message["document"]["at"]
        assert (
            message["sd"].startswith("[audit@32473 ")
            and f'sequence="{message["document"]["sequence"]}"' in message["sd"]
        )
    severities = {m["document"]["status"]: int(m["pri"]) % 8 for m in hooked}
    assert severities == {"PENDING": 6, "DELIVERED": 6, "FAILED": 3, "EXPIRED": 4}
    assert {int(m["pri"]) // 8 for m in hooked} == {19}  # local3
    failed_record = next(
        m for m in hooked if m["document"]["message_id"] == ids[2] and m["document"]["event"] == "record"
    )
    assert 'to_agent="rep\\"orter\\]"' in failed_record["sd"]  # escaped as RFC 5424 says
    assert failed_record["document"]["record"]["payload"] == {"publish": "plan ✓"}


async def test_syslog_over_tls_verifies_the_receiver(database_url: str, tmp_path: Path) -> None:
    certificates = make_certificates(tmp_path / "tls")
    stranger = make_certificates(tmp_path / "other", name="other-ca")
    with rsyslog(tmp_path / "rsyslog", tls=certificates) as receiver:
        async with MessageAuditTrail(database_url) as trail:
            await write_story(trail)
            position, stats = await followed(trail, f"syslog+tls://127.0.0.1:{receiver.port}?ca={certificates.ca}")
            assert (position, stats.sent, stats.failed) == (STORY_ENTRIES, STORY_ENTRIES, 0)
            assert [m["document"]["sequence"] for m in receiver.messages(STORY_ENTRIES)] == list(range(1, 10))

            untrusted = ExportSink(f"syslog+tls://127.0.0.1:{receiver.port}?ca={stranger.ca}", backoff=FAST)
            untrusted.attach(trail)
            await trail.log_message(Message("a", "b", MessageType.EVENT, {}))
            await trail.flush()
            for _ in range(600):
                if untrusted.stats.failed >= 2:
                    break
                await asyncio.sleep(0.05)
            await untrusted.close(timeout=0)
    assert untrusted.stats.failed >= 2 and "CERTIFICATE_VERIFY_FAILED" in (untrusted.stats.last_error or "")
    assert untrusted.stats.sent == 0 and untrusted.stats.dropped == 1  # given up at close, and counted
    assert len(receiver.log.read_text().splitlines()) == STORY_ENTRIES  # the untrusted receiver got nothing


async def test_a_receiver_that_is_down_never_slows_the_trail_and_drops_are_counted(
    database_url: str, tmp_path: Path
) -> None:
    port = free_port()  # nothing listens yet
    meter_provider, reader = metered()
    async with MessageAuditTrail(database_url) as trail:
        sink = ExportSink(f"syslog+tcp://127.0.0.1:{port}", buffer=50, backoff=FAST, meter_provider=meter_provider)
        sink.attach(trail)
        started = time.monotonic()
        for n in range(40):  # 40 batches of 5 records: 200 entries against a buffer of 50
            await asyncio.gather(
                *(trail.log_message(Message("a", "b", MessageType.EVENT, {"n": n, "i": i})) for i in range(5))
            )
        writing = time.monotonic() - started
        assert trail.writer_stats.written == 200  # the trail committed everything, whatever the sink did
        for _ in range(600):
            if sink.stats.failed >= 3:
                break
            await asyncio.sleep(0.05)
        assert sink.stats.sent == 0 and sink.stats.failed >= 3
        assert sink.stats.dropped + sink.stats.queued == 200 and sink.stats.dropped >= 145  # the oldest went
        # the receiver comes up on the sink's port: what is buffered is delivered, in order
        late = rsyslog_on(tmp_path / "late", port)
        try:
            await sink.flush(60)
            received = late.messages(sink.stats.sent)
        finally:
            late.stop()
        await sink.close()
    sequences = [m["document"]["sequence"] for m in received]
    assert sequences == sorted(sequences) and sequences[-1] == 200  # the newest survive, in order
    assert sink.stats.sent + sink.stats.dropped == 200
    assert counter(reader, "audit_plugin.export.dropped") == sink.stats.dropped
    assert counter(reader, "audit_plugin.export.sent") == sink.stats.sent
    assert counter(reader, "audit_plugin.export.failed") == sink.stats.failed
    assert writing < 120  # a sanity bound only: the figures are in benchmarks/sinks.py


async def test_a_receiver_restart_loses_nothing(database_url: str, tmp_path: Path) -> None:
    with rsyslog(tmp_path / "rsyslog") as receiver:
        async with MessageAuditTrail(database_url) as trail:
            sink = ExportSink(f"syslog+tcp://127.0.0.1:{receiver.port}", backoff=FAST).attach(trail)
            await write_story(trail, "before")
            await sink.flush(60)
            receiver.messages(STORY_ENTRIES)
            receiver.stop()
            await write_story(trail, "during")  # sent into a closed connection: noticed, retried
            for _ in range(600):
                if sink.stats.failed:
                    break
                await asyncio.sleep(0.05)
            receiver.start()
            await sink.flush(60)
            await sink.close()
        received = receiver.messages(2 * STORY_ENTRIES)
    assert sorted({m["document"]["sequence"] for m in received}) == list(range(1, 2 * STORY_ENTRIES + 1))
    assert sink.stats.failed >= 1 and sink.stats.dropped == 0


def rsyslog_on(directory: Path, port: int) -> Any:
    from tests.sinks_support import Rsyslog, require_rsyslog

    require_rsyslog()
    directory.mkdir(parents=True, exist_ok=True)
    server = Rsyslog(directory, port)
    server.start()
    return server


def metered() -> tuple[MeterProvider, InMemoryMetricReader]:
    reader = InMemoryMetricReader()
    return MeterProvider(metric_readers=[reader]), reader


def counter(reader: InMemoryMetricReader, name: str) -> int:
    data = reader.get_metrics_data()
    return sum(
        point.value
        for resource in data.resource_metrics
        for scope in resource.scope_metrics
        for metric in scope.metrics
        if metric.name == name
        for point in metric.data.data_points
    )


# -- OTLP ----------------------------------------------------------------------------------


async def test_otlp_logs_carry_the_document_the_conventions_and_the_trace(database_url: str) -> None:
    with otlp_receiver() as receiver:
        receiver.fail_next = 2  # the collector is not ready yet: refused twice, then taken
        async with MessageAuditTrail(database_url) as trail:
            sink = ExportSink(receiver.url + "?timeout=2&service_name=agents", backoff=FAST).attach(trail)
            ids = await write_story(trail)
            await sink.flush(120)
            await sink.close()
            _, stats = await followed(trail, receiver.url)
    assert sink.stats.sent == STORY_ENTRIES and sink.stats.failed >= 1 and stats.sent == STORY_ENTRIES
    assert len(receiver.records) == 2 * STORY_ENTRIES
    hooked, polled = receiver.records[:STORY_ENTRIES], receiver.records[STORY_ENTRIES:]
    assert [any_value(r.body) for _, _, r in hooked] == [any_value(r.body) for _, _, r in polled]
    resource, scope, first = hooked[0]
    assert {kv.key: any_value(kv.value) for kv in resource.attributes}["service.name"] == "agents"
    assert scope.name == "audit_plugin"
    attributes = {kv.key: any_value(kv.value) for kv in first.attributes}
    assert attributes == {
        "messaging.system": "audit_plugin",
        "messaging.message.id": ids[0],
        "messaging.message.conversation_id": "conv-s",
        "messaging.destination.name": "worker",
        "gen_ai.agent.name": "planner",
        "gen_ai.conversation.id": "conv-s",
        "audit_plugin.event": "record",
        "audit_plugin.chain.id": "default",
        "audit_plugin.chain.sequence": 1,
        "audit_plugin.chain.entry_hash": any_value(first.body)["entry_hash"],
        "audit_plugin.message.status": "PENDING",
        "audit_plugin.message.type": "QUERY",
        "audit_plugin.message.retry_count": 0,
    }
    assert first.trace_id.hex() == TRACE_ID and first.span_id.hex() == SPAN_ID
    assert first.event_name == "audit_plugin.lifecycle.record"
    body = any_value(first.body)
    assert body["record"]["payload"] == {"ask": "stock?", "tag": "s"} and body["sequence"] == 1
    assert first.time_unix_nano // 1000 % 1_000_000 == int(body["at"][20:26])  # the entry's time, to the µs
    failed = next(r for _, _, r in hooked if any_value(r.body)["status"] == "FAILED")
    assert (failed.severity_text, failed.severity_number) == ("ERROR", 17)
    assert {kv.key: any_value(kv.value) for kv in failed.attributes}[
        "audit_plugin.message.error"
    ] == "PermissionError: ro"
    untraced = hooked[3][2]  # the reply's record
    assert untraced.trace_id == b"" and any_value(untraced.body)["event"] == "record"


# -- JSON Lines ----------------------------------------------------------------------------


async def test_json_lines_follow_log_rotation(database_url: str, tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    async with MessageAuditTrail(database_url) as trail:
        sink = ExportSink(f"jsonl://{path}?fsync=true", backoff=FAST).attach(trail)
        await write_story(trail, "one")
        await sink.flush(60)
        path.rename(tmp_path / "audit.jsonl.1")  # logrotate's "create"
        await write_story(trail, "two")
        await sink.flush(60)
        await sink.close()
    rotated = [json.loads(line) for line in (tmp_path / "audit.jsonl.1").read_text().splitlines()]
    current = [json.loads(line) for line in path.read_text().splitlines()]
    assert [d["sequence"] for d in rotated + current] == list(range(1, 2 * STORY_ENTRIES + 1))
    assert current[0]["record"]["payload"]["tag"] == "two"


async def test_encrypted_payloads_are_exported_as_the_marker_never_in_clear(tmp_path: Path) -> None:
    from audit_plugin.privacy.crypto import LocalKeyFileProvider

    database_url = f"sqlite+aiosqlite:///{tmp_path / 'audit.db'}"
    provider = LocalKeyFileProvider(tmp_path / "master.key")
    path = tmp_path / "out.jsonl"
    async with MessageAuditTrail(database_url, key_provider=provider) as trail:
        sink = ExportSink(f"jsonl://{path}").attach(trail)
        await trail.log_message(Message("alice", "bob", MessageType.EVENT, {"secret": "s3cr3t"}))
        await trail.flush()
        await sink.flush(60)
        await sink.close()
    [document] = [json.loads(line) for line in path.read_text().splitlines()]
    payload = document["record"]["payload"]
    assert payload["$audit"] == "encrypted" and set(payload) == {"$audit", "kid"}
    assert "s3cr3t" not in path.read_text()


# -- the command line ----------------------------------------------------------------------


async def test_export_follow_resumes_from_its_state_file_and_matches_the_hook(
    database_url: str, tmp_path: Path
) -> None:
    state, out, hooked = tmp_path / "export.state", tmp_path / "followed.jsonl", tmp_path / "hooked.jsonl"
    async with MessageAuditTrail(database_url) as trail:
        sink = ExportSink(f"jsonl://{hooked}").attach(trail)
        await write_story(trail, "one")

        def follow() -> Any:
            return run_cli(
                "export", "--follow", "--to", f"jsonl://{out}", "--state", str(state), "--from-sequence", "0",
                "--exit-when-idle", database_url=database_url,
            )  # fmt: skip

        first = await asyncio.to_thread(follow)
        assert first.returncode == 0, first.stderr
        assert f"sent {STORY_ENTRIES}, dropped 0, failed sends 0" in first.stderr
        assert json.loads(state.read_text()) == {"chain_id": "default", "sequence": STORY_ENTRIES}
        again = await asyncio.to_thread(follow)
        assert "sent 0," in again.stderr  # nothing new: nothing sent twice
        await write_story(trail, "two")
        third = await asyncio.to_thread(follow)
        assert f"sent {STORY_ENTRIES}," in third.stderr
        await sink.flush(60)
        await sink.close()
    assert out.read_text() == hooked.read_text()  # the store follower and the hook: the same lines
    assert len(out.read_text().splitlines()) == 2 * STORY_ENTRIES


async def test_export_follow_to_stdout_stops_quietly_when_the_reader_goes(database_url: str) -> None:
    async with MessageAuditTrail(database_url) as trail:
        await write_story(trail)
    result = await asyncio.to_thread(
        run_cli, "export", "--follow", "--from-sequence", "0", "--exit-when-idle", database_url=database_url
    )
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [d["sequence"] for d in lines] == list(range(1, STORY_ENTRIES + 1))


def test_export_follow_options_are_checked(database_url: str, tmp_path: Path) -> None:
    run_cli("demo", database_url=database_url)
    assert_one_line_error(run_cli("export", "--to", "jsonl:-", database_url=database_url), 2, "--to needs --follow")
    bad = run_cli("export", "--follow", "--to", "syslog+udp://x", database_url=database_url)
    assert_one_line_error(bad, 2, "'--to'", "syslog+udp://x")
    assert_one_line_error(run_cli("export", "--follow", "--csv", database_url=database_url), 2, "no --csv")
    assert_one_line_error(run_cli("export", "--follow", "--from", "a", database_url=database_url), 2, "no filters")
    state = tmp_path / "s.state"
    state.write_text('{"chain_id": "other", "sequence": 3}')
    wrong = run_cli("export", "--follow", "--state", str(state), "--exit-when-idle", database_url=database_url)
    assert_one_line_error(wrong, 2, "--state", "'other'")
    state.write_text('{"chain_id": "default", "sequence": 3}')
    resumed = run_cli(
        "export", "--follow", "--state", str(state), "--from-sequence", "0", "--exit-when-idle",
        database_url=database_url,
    )  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr  # once the state file exists it says where to start
    assert json.loads(resumed.stdout.splitlines()[0])["sequence"] == 4


def test_state_files_are_replaced_whole(tmp_path: Path) -> None:
    state = StateFile(tmp_path / "export.state")
    assert state.load("default") is None
    state.save("default", 41)
    state.save("default", 42)
    assert state.load("default") == 42 and not (tmp_path / "export.state.partial").exists()
    (tmp_path / "export.state").write_text("{half")
    with pytest.raises(InvalidFieldError) as broken:
        state.load("default")
    assert broken.value.field == "state"
    assert os.listdir(tmp_path) == ["export.state"]


def test_a_trail_without_a_chain_exports_its_records_and_updates_unnumbered() -> None:
    from audit_plugin.integrity.ledger import NOTHING_APPENDED
    from audit_plugin.model.records import StatusUpdate, build_row
    from audit_plugin.sinks import batch_documents
    from audit_plugin.storage.committed import CommittedBatch

    message = Message("a", "b", MessageType.EVENT, {"n": 1}, correlation_id="c")
    envelope = '{"$audit":"encrypted","alg":"A256GCM","kid":"k1","nonce":"bm9uY2U=","ct":"Y3Q="}'
    rows = [build_row(message, '{"n": 1}'), build_row(Message("a", "b", MessageType.EVENT, {}), envelope)]
    update = StatusUpdate.build(message.message_id, MessageStatus.DELIVERED)
    batch = CommittedBatch(None, rows, [update], NOTHING_APPENDED, 0.01, chained=False)  # a nats:// producer's
    documents = batch_documents(batch)
    assert [(d["event"], d["sequence"], d["chain_id"]) for d in documents] == [
        ("record", None, None),
        ("record", None, None),
        ("status", None, None),
    ]
    assert documents[0]["record"]["payload"] == {"n": 1} and documents[0]["record"]["correlation_id"] == "c"
    assert documents[1]["record"]["payload"] == {"$audit": "encrypted", "kid": "k1"}  # never the ciphertext
    assert documents[2]["message_id"] == message.message_id and documents[2]["status"] == "DELIVERED"
