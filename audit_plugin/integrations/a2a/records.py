"""From A2A protocol objects to audit records: ids, agents, payloads and outcomes.

Pure functions shared by the server and client sides, so both record the
same A2A object the same way (a store shared by both sides then holds it
once: records are idempotent by ``message_id``).

* An A2A ``Message`` becomes a record with the same ``message_id``; a
  ``Task``, ``TaskStatusUpdateEvent`` or ``TaskArtifactUpdateEvent`` becomes
  a record whose id is the id of the message its status carries, else one
  derived from the task id, state and status time when it has one
  (``{task_id}/{state}[/{time}]``: the same status seen on both sides, or
  polled twice, is one record), else a new id (artifact updates).
* ``correlation_id`` is the A2A ``context_id``; ``task_id``, ``role`` and
  the kind of object travel in :attr:`Message.headers` (``a2a-task-id``,
  ``a2a-role``, ``a2a-kind``) and are also in the stored payload.
* The payload is the object in A2A's JSON form, keyed as in a
  ``StreamResponse``: ``{"message": {...}}``, ``{"task": {...}}``,
  ``{"statusUpdate": {...}}`` or ``{"artifactUpdate": {...}}``.
* Message types: a user's message is a COMMAND, an agent's message a
  RESPONSE, task objects and updates are EVENTs. What an agent emits while
  handling a message has ``reply_to`` set to that message's id.
* Nothing the SDK accepts is refused: an id, name or context id the store
  cannot keep as it is (over 1,024 characters, a NUL) is cleaned up the same
  way on both sides (:func:`~audit_plugin.integrations.payloads.storable_text`),
  and a payload it cannot keep (a NUL in a text part, nesting too deep) is
  its A2A JSON as base64 (``{"body_base64": ..., "content_type":
  "application/json"}``).
"""

from __future__ import annotations

from typing import Any

from a2a.helpers.proto_helpers import get_message_text
from a2a.types import (
    Message as A2AMessage,
)
from a2a.types import (
    Role,
    SendMessageResponse,
    StreamResponse,
    Task,
    TaskArtifactUpdateEvent,
    TaskState,
    TaskStatus,
    TaskStatusUpdateEvent,
)
from google.protobuf.json_format import MessageToDict, MessageToJson

from audit_plugin.exceptions import AuditError
from audit_plugin.integrations._recording import UNKNOWN_AGENT
from audit_plugin.integrations.payloads import Body, storable_text
from audit_plugin.model import validation as v
from audit_plugin.model.messages import Message, MessageStatus, MessageType

Event = A2AMessage | Task | TaskStatusUpdateEvent | TaskArtifactUpdateEvent
"""What an agent emits through its event queue, and what a client receives."""

TASK_ID_HEADER = "a2a-task-id"
ROLE_HEADER = "a2a-role"
KIND_HEADER = "a2a-kind"
FROM_AGENT_HEADER = "audit-from-agent"
"""HTTP header (or request metadata key) in which an audited client names itself to the server."""

OUTCOME_OPERATION = "a2a-outcome"
"""``operation_id`` of every outcome the adapters record: a message's outcome is applied once,
though both ends of the call report it (the store deduplicates per message)."""


_KINDS: dict[type, str] = {
    A2AMessage: "message",
    Task: "task",
    TaskStatusUpdateEvent: "statusUpdate",
    TaskArtifactUpdateEvent: "artifactUpdate",
}

FAILED_STATES = frozenset({TaskState.TASK_STATE_FAILED, TaskState.TASK_STATE_REJECTED, TaskState.TASK_STATE_CANCELED})
"""Task states that make the message which started the task FAILED."""

HANDLED_STATES = frozenset(
    {TaskState.TASK_STATE_COMPLETED, TaskState.TASK_STATE_INPUT_REQUIRED, TaskState.TASK_STATE_AUTH_REQUIRED}
)
"""Task states that make it DELIVERED: done, or waiting for the next message (which gets its own record)."""


def request_record(message: A2AMessage, *, from_agent: str, to_agent: str) -> Message:
    """The record of a message a client sends to an agent (COMMAND, or RESPONSE for an agent's role)."""
    return _record(message, message.message_id, from_agent, to_agent, message.context_id)


def event_record(
    event: Event, *, from_agent: str, to_agent: str, context_id: str | None = None, reply_to: str | None = None
) -> Message | None:
    """The record of an event an agent emits (``None`` for anything that is not an A2A event).

    ``context_id`` is used when the event carries none; ``reply_to`` is the
    id of the message the event answers.
    """
    if isinstance(event, A2AMessage):
        return _record(event, event.message_id, from_agent, to_agent, event.context_id or context_id, reply_to)
    if isinstance(event, Task | TaskStatusUpdateEvent | TaskArtifactUpdateEvent):
        return _record(event, _event_id(event), from_agent, to_agent, event.context_id or context_id, reply_to)
    return None


def reply_events(result: Any) -> list[Event]:
    """The A2A events in what a client call returned (a response, a stream event, a task)."""
    if isinstance(result, SendMessageResponse | StreamResponse):
        kind = result.WhichOneof("payload")
        return [getattr(result, kind)] if kind else []
    if isinstance(result, Task | A2AMessage | TaskStatusUpdateEvent | TaskArtifactUpdateEvent):
        return [result]
    return []


def task_id_of(event: Event) -> str | None:
    """The id of the task an event belongs to, if any."""
    task_id = event.id if isinstance(event, Task) else event.task_id
    return task_id or None


def outcome(event: Event) -> tuple[MessageStatus, str | None] | None:
    """What ``event`` says about the message that started its task: ``(status, error)``, or ``None`` while open.

    A message reply settles it DELIVERED; a task that completed or waits for
    input/auth too; a task that failed, was rejected or canceled settles it
    FAILED with the reason (the state, and the text of the status message).
    """
    if isinstance(event, A2AMessage):
        return MessageStatus.DELIVERED, None
    status = _status_of(event)
    if status is None:
        return None
    if status.state in HANDLED_STATES:
        return MessageStatus.DELIVERED, None
    if status.state in FAILED_STATES:
        reason = f"task {state_name(status.state)}"
        text = get_message_text(status.message) if status.HasField("message") else ""
        return MessageStatus.FAILED, f"{reason}: {text}" if text else reason
    return None


def state_name(state: TaskState) -> str:
    """``TASK_STATE_CANCELED`` -> ``"canceled"``."""
    return TaskState.Name(state).removeprefix("TASK_STATE_").lower().replace("_", "-")


def _status_of(event: Event) -> TaskStatus | None:
    if isinstance(event, Task | TaskStatusUpdateEvent) and event.HasField("status"):
        return event.status
    return None


def _event_id(event: Task | TaskStatusUpdateEvent | TaskArtifactUpdateEvent) -> str | None:
    status = _status_of(event)
    if status is None:
        return None
    if status.HasField("message") and status.message.message_id:
        return status.message.message_id
    task_id = task_id_of(event)
    if not task_id:
        return None
    if status.HasField("timestamp"):
        return f"{task_id}/{state_name(status.state)}/{status.timestamp.ToJsonString()}"
    return f"{task_id}/{state_name(status.state)}"


def _record(
    event: Event,
    message_id: str | None,
    from_agent: str,
    to_agent: str,
    context_id: str | None,
    reply_to: str | None = None,
) -> Message:
    kind = _KINDS[type(event)]
    headers = {KIND_HEADER: kind}
    task_id = task_id_of(event)
    if task_id:
        headers[TASK_ID_HEADER] = task_id
    if isinstance(event, A2AMessage):
        headers[ROLE_HEADER] = Role.Name(event.role)
        message_type = MessageType.RESPONSE if event.role == Role.ROLE_AGENT else MessageType.COMMAND
    else:
        message_type = MessageType.EVENT
    storable_id = storable_text(message_id, None)
    fields: dict[str, Any] = {"message_id": storable_id} if storable_id else {}
    return Message(
        from_agent=storable_text(from_agent, UNKNOWN_AGENT) or UNKNOWN_AGENT,
        to_agent=storable_text(to_agent, UNKNOWN_AGENT) or UNKNOWN_AGENT,
        message_type=message_type,
        payload=_payload(kind, event),
        correlation_id=storable_text(context_id, None),
        reply_to=storable_text(reply_to, None),
        headers={name: storable_text(value, "") or "" for name, value in headers.items()},
        **fields,
    )


def _payload(kind: str, event: Event) -> dict[str, Any]:
    """``{kind: <the event in A2A's JSON form>}``, or that JSON as base64 when the store cannot keep it as it is."""
    payload = {kind: MessageToDict(event)}
    try:
        v.encode_payload(payload)
    except AuditError:
        return Body(MessageToJson(event, indent=None).encode(), "application/json").base64()
    return payload
