from audit_plugin import Message, MessageAuditTrail, MessageStatus, MessageType


async def test_log_and_read_back(trail: MessageAuditTrail) -> None:
    message = Message("a", "b", MessageType.EVENT, {"k": 1})
    assert await trail.log_message(message) == message.message_id
    [record] = await trail.query_messages()
    assert record.message_id == message.message_id
    assert record.status is MessageStatus.PENDING
    assert record.payload == {"k": 1}
