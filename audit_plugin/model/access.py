"""Who reads the trail, with which role, and what a read leaves in the chain: roles, actors, readings, access entries.

* :class:`Role`: ``reader`` sees metadata and payloads with their values
  masked; ``auditor`` may see decrypted payloads, export, run proofs and
  read the access log.
* :class:`Actor`: who reads (a name), with a role, through which channel
  (``api``, ``cli``, ``viewer``).
* :class:`Reading`: what one actor read, gathered over one or more reads
  (records returned, the first :data:`MAX_LISTED_IDS` ids, payloads
  decrypted), until it is recorded as one access entry.
* :class:`AccessEntry`: an access entry read back from the chain.

An access entry is an ordinary entry of the hash chain (``kind="access"``,
no message): its document (:meth:`Reading.document`, canonical JSON) is
kept in the entry's ``error`` column and ``retry_count`` holds the number
of records read, so the entry's digest covers all of it.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from audit_plugin.exceptions import AccessDeniedError, FieldTypeError, InvalidFieldError
from audit_plugin.model import validation as v

ACCESS_KIND = "access"
"""The ``kind`` of an access entry in ``message_audit_events``."""
MAX_LISTED_IDS = 100
"""Most record ids (and decrypted ids) an access entry lists; the counts are always complete."""
MAX_ACTOR_LENGTH = 256
MAX_ACTION_LENGTH = 64
MAX_FILTER_BYTES = 4096
CHANNELS = ("api", "cli", "viewer")
DOCUMENT_VERSION = 1


class Role(StrEnum):
    """What a reader may see and do (see :mod:`audit_plugin.model.access`)."""

    READER = "reader"
    AUDITOR = "auditor"

    @property
    def may_decrypt(self) -> bool:
        """Sees payloads as stored (decrypted when the trail has the key), not masked."""
        return self is Role.AUDITOR

    @property
    def may_export(self) -> bool:
        """Exports records (``audit-plugin export``, ``conversation --html``)."""
        return self is Role.AUDITOR

    @property
    def may_prove(self) -> bool:
        """Runs ``verify()``, saves checkpoints, asks for proofs."""
        return self is Role.AUDITOR

    @property
    def may_read_access_log(self) -> bool:
        """Reads who read the trail."""
        return self is Role.AUDITOR

    def require(self, allowed: bool, action: str) -> None:
        """Raise :class:`~audit_plugin.exceptions.AccessDeniedError` (this role, ``action``) unless ``allowed``."""
        if not allowed:
            raise AccessDeniedError(self.value, action)


def check_role(value: object, field_name: str = "role") -> Role:
    """``value`` as a :class:`Role` (a member or its name in any case); a typed error naming ``field_name`` if not."""
    if isinstance(value, Role):
        return value
    if not isinstance(value, str):
        raise FieldTypeError(field_name, "a role (reader or auditor)", value)
    try:
        return Role(value.strip().lower())
    except ValueError:
        raise InvalidFieldError(
            field_name, f"{value[:40]!r} is not a role ({', '.join(r.value for r in Role)})"
        ) from None


def check_actor_name(value: object, field_name: str = "actor") -> str:
    """An actor's name: printable text of 1 to :data:`MAX_ACTOR_LENGTH` characters."""
    name = v.check_text(field_name, value, max_length=MAX_ACTOR_LENGTH)
    assert name is not None
    if not name.isprintable() or name != name.strip():
        raise InvalidFieldError(field_name, "must be printable text without surrounding spaces")
    return name


@dataclass(frozen=True, slots=True)
class Actor:
    """Who reads: ``name`` (a token's name, a proxy's user, an OS user, the caller's word), ``role``, ``channel``."""

    name: str
    role: Role = Role.AUDITOR
    channel: str = "api"

    def __post_init__(self) -> None:
        check_actor_name(self.name)
        object.__setattr__(self, "role", check_role(self.role))
        if self.channel not in CHANNELS:
            raise InvalidFieldError("channel", f"{self.channel!r} is not one of {', '.join(CHANNELS)}")

    @classmethod
    def of(cls, value: Actor | str) -> Actor:
        """``value`` itself, or an auditor of that name reading through the API."""
        if isinstance(value, Actor):
            return value
        if isinstance(value, str):
            return cls(value)
        raise FieldTypeError("actor", "an Actor, a name or a Reading", value)


def filter_document(value: Mapping[str, Any] | None) -> dict[str, Any]:
    """A filter as JSON-able values (times as ISO text, enums as values), checked to be small."""
    document: dict[str, Any] = {}
    for key, item in (value or {}).items():
        if item is None or item == ():
            continue
        if isinstance(item, datetime):
            item = item.isoformat()
        elif isinstance(item, StrEnum):
            item = item.value
        elif isinstance(item, tuple | list):
            item = [x.isoformat() if isinstance(x, datetime) else x for x in item]
        elif not isinstance(item, str | int | float | bool):
            item = str(item)
        document[str(key)] = item
    if len(json.dumps(document, ensure_ascii=False)) > MAX_FILTER_BYTES:
        raise InvalidFieldError("filter", f"is over {MAX_FILTER_BYTES} bytes of JSON")
    return document


@dataclass(slots=True)
class Reading:
    """What ``actor`` read for ``action`` with ``filter``, gathered until it is recorded (``trail.record_access``).

    Pass it as ``actor=`` to the trail's reads: each adds what it returned.
    ``listed`` bounds the ids kept (the counts stay exact).
    """

    actor: Actor
    action: str
    filter: dict[str, Any] = field(default_factory=dict)
    listed: int = MAX_LISTED_IDS
    reads: int = 0
    records: int = 0
    ids: list[str] = field(default_factory=list)
    decrypted: int = 0
    decrypted_ids: list[str] = field(default_factory=list)
    _seen: set[str] = field(default_factory=set, repr=False)
    _seen_decrypted: set[str] = field(default_factory=set, repr=False)

    def __post_init__(self) -> None:
        self.actor = Actor.of(self.actor)
        action = v.check_text("action", self.action, max_length=MAX_ACTION_LENGTH)
        if action is None or not action.replace("-", "").replace("_", "").isalnum():
            raise InvalidFieldError("action", "must be letters, digits, '-' or '_'")
        self.filter = filter_document(self.filter)

    @property
    def role(self) -> Role:
        return self.actor.role

    def note(self, ids: Iterable[str], decrypted: Iterable[str] = ()) -> None:
        """Add one read: the ids of the records it returned, and those whose payload was decrypted."""
        self.reads += 1
        for message_id in ids:
            self.records += 1
            if message_id not in self._seen and len(self.ids) < self.listed:
                self._seen.add(message_id)
                self.ids.append(message_id)
        for message_id in decrypted:
            self.decrypted += 1
            if message_id not in self._seen_decrypted and len(self.decrypted_ids) < self.listed:
                self._seen_decrypted.add(message_id)
                self.decrypted_ids.append(message_id)

    def document(self) -> str:
        """The access entry's document: canonical JSON (keys sorted, no whitespace), ids capped at the limit."""
        return json.dumps(
            {
                "v": DOCUMENT_VERSION,
                "actor": self.actor.name,
                "role": self.actor.role.value,
                "channel": self.actor.channel,
                "action": self.action,
                "filter": self.filter,
                "records": self.records,
                "ids": self.ids[:MAX_LISTED_IDS],
                "decrypted": self.decrypted,
                "decrypted_ids": self.decrypted_ids[:MAX_LISTED_IDS],
            },
            sort_keys=True,
            separators=(",", ":"),
            ensure_ascii=False,
        )

    def reset(self) -> None:
        """Forget what was gathered (it was recorded)."""
        self.reads = self.records = self.decrypted = 0
        self.ids, self.decrypted_ids = [], []
        self._seen, self._seen_decrypted = set(), set()


@dataclass(frozen=True, slots=True)
class AccessEntry:
    """One access entry of the chain, read back: who read what, when, and where it sits in the chain."""

    chain_id: str
    sequence: int
    at: datetime
    actor: str
    role: str
    channel: str
    action: str
    filter: dict[str, Any]
    records: int
    ids: list[str]
    decrypted: int
    decrypted_ids: list[str]
    entry_hash: str | None = None

    @classmethod
    def from_document(
        cls, chain_id: str, sequence: int, at: datetime, document: str, entry_hash: str | None = None
    ) -> AccessEntry:
        """An entry from its stored document (see :meth:`Reading.document`)."""
        data = json.loads(document)
        return cls(
            chain_id=chain_id,
            sequence=sequence,
            at=at,
            actor=data["actor"],
            role=data["role"],
            channel=data["channel"],
            action=data["action"],
            filter=data.get("filter", {}),
            records=data.get("records", 0),
            ids=data.get("ids", []),
            decrypted=data.get("decrypted", 0),
            decrypted_ids=data.get("decrypted_ids", []),
            entry_hash=entry_hash,
        )
