"""Sharded chains: one trail's lifecycle kept in N independent hash chains, so writers of different shards never wait.

A message belongs to one shard for good: :func:`shard_of` maps its id to a
number from 0 to N-1 (CRC-32 of the id's UTF-8 bytes, modulo N: the same in
every process, on every machine, in every version). Every entry about that
message (its record, each status change or retry, a late update) goes into
that shard's chain, so each chain holds whole lifecycles and the checks of
``verify()`` hold per chain. A retention run is recorded in every chain.

Shard ``k`` of a chain ``base`` is the chain ``base/k`` (:func:`shard_chain_id`);
with one shard the chain is ``base`` itself, byte for byte the single chain
of earlier versions (same id, same rows, same hashes). The number of shards
is fixed when a store's chain is first written, and read back from the
store's chain rows (see :func:`shard_count`): a trail opened without saying
how many takes the store's.

:class:`ShardedChains` is what a trail and its store share: one
:class:`~audit_plugin.integrity.ledger.Ledger` per shard (each keeps its own
head between batches and knows its own chain id), and the routing of a
message id to its ledger.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from audit_plugin.exceptions import ChainError, InvalidFieldError
from audit_plugin.integrity.checkpoint import Checkpoint
from audit_plugin.integrity.ledger import DEFAULT_CHAIN_ID, AppendedEntries, Ledger, LedgeredRow, check_chain_id
from audit_plugin.model import validation as v

MAX_SHARDS = 1024
"""Most shards a chain can be split into."""

SHARD_SEPARATOR = "/"
"""Between a chain's id and a shard number in a shard's chain id (``default/3``)."""

_MAX_BASE_LENGTH = 64 - len(SHARD_SEPARATOR) - len(str(MAX_SHARDS - 1))
"""Chain ids are at most 64 characters: a sharded chain's own id leaves room for the suffix."""


def check_shards(value: object, field: str = "shards", *, optional: bool = False) -> int | None:
    """``value`` as a shard count (1 to :data:`MAX_SHARDS`); a typed error naming ``field`` otherwise."""
    return v.check_int(field, value, minimum=1, maximum=MAX_SHARDS, optional=optional)


def shard_of(message_id: str, shards: int) -> int:
    """The shard of ``message_id`` among ``shards`` (0 when there is one)."""
    if shards == 1:
        return 0
    return zlib.crc32(message_id.encode("utf-8", "surrogatepass")) % shards


def shard_chain_id(base: str, shard: int, shards: int) -> str:
    """The chain id of shard ``shard`` of ``shards`` of chain ``base``: ``base`` itself when there is one shard."""
    return base if shards == 1 else f"{base}{SHARD_SEPARATOR}{shard}"


def shard_count(base: str, chain_ids: Iterable[str]) -> int | None:
    """How many shards of ``base`` the stored ``chain_ids`` hold (``None``: none of them is ``base``'s).

    ``base`` itself is one shard; ``base/0`` ... ``base/(N-1)``, all of them,
    are N. Anything else (both forms, a number missing) is a
    :class:`~audit_plugin.exceptions.ChainError`: the store's chains were
    changed by hand or by a defect, and writing on would fork them.
    """
    prefix = base + SHARD_SEPARATOR
    whole = False
    numbers: set[int] = set()
    for chain_id in chain_ids:
        if chain_id == base:
            whole = True
        elif chain_id.startswith(prefix) and chain_id[len(prefix) :].isdigit():
            numbers.add(int(chain_id[len(prefix) :]))
    if not whole and not numbers:
        return None
    if whole and numbers:
        raise ChainError(f"the store holds chain {base!r} both whole and in shards; it cannot be extended")
    if whole:
        return 1
    if numbers != set(range(len(numbers))) or len(numbers) < 2:
        found = ", ".join(str(n) for n in sorted(numbers))
        raise ChainError(f"the shards of chain {base!r} in the store are incomplete (found {found})")
    return len(numbers)


class ShardedChains:
    """A trail's chains: one :class:`~audit_plugin.integrity.ledger.Ledger` per shard, and which message goes where.

    :param base_id: the chain's id (one per database is usual).
    :param shards: how many chains; ``None``: what the store holds (one for
        a new store), learnt by :meth:`adopt` when the store is opened.
    :param hashing: compute digests and link hashes (see :class:`~audit_plugin.integrity.ledger.Ledger`).
    """

    def __init__(self, base_id: str = DEFAULT_CHAIN_ID, *, shards: int | None = None, hashing: bool = True) -> None:
        check_chain_id(base_id)
        check_shards(shards, optional=True)
        if shards is not None and shards > 1 and len(base_id) > _MAX_BASE_LENGTH:
            raise InvalidFieldError("chain_id", f"must be at most {_MAX_BASE_LENGTH} characters to be sharded")
        self.base_id = base_id
        self.fixed = shards is not None
        """Whether the number of shards was given (else the store's is taken)."""
        self._hashing = hashing
        self.ledgers: tuple[Ledger, ...] = self._ledgers(shards or 1, hashing)

    @classmethod
    def of(cls, chains: ShardedChains | Ledger) -> ShardedChains:
        """``chains`` itself, or a single ``Ledger`` as a one-shard set around that very ledger."""
        if isinstance(chains, ShardedChains):
            return chains
        single = cls(chains.chain_id, shards=1, hashing=chains.hashing)
        single.ledgers = (chains,)
        return single

    def _ledgers(self, shards: int, hashing: bool) -> tuple[Ledger, ...]:
        return tuple(Ledger(shard_chain_id(self.base_id, k, shards), hashing=hashing) for k in range(shards))

    @property
    def shards(self) -> int:
        return len(self.ledgers)

    @property
    def chain_ids(self) -> tuple[str, ...]:
        """Every shard's chain id, in shard order (the order their writer locks are taken in)."""
        return tuple(ledger.chain_id for ledger in self.ledgers)

    @property
    def hashing(self) -> bool:
        return self.ledgers[0].hashing

    @property
    def hash_version(self) -> int:
        return self.ledgers[0].hash_version

    def adopt(self, stored: int | None) -> None:
        """Take the store's shard count ``stored`` (``None``: the store holds none yet, keep ours).

        Raises :class:`~audit_plugin.exceptions.ChainError` when the count was
        given and differs: messages would move to other shards' chains.
        """
        if stored is None or stored == self.shards:
            return
        if self.fixed:
            raise ChainError(
                f"chain {self.base_id!r} is kept in {stored} shard(s) in this store, not {self.shards}: "
                f"open it with shards={stored} (a store's shard count cannot change)"
            )
        self.ledgers = self._ledgers(stored, self._hashing)

    def shard_of(self, message_id: str) -> int:
        return shard_of(message_id, len(self.ledgers))

    def ledger_of(self, message_id: str) -> Ledger:
        """The ledger of the shard ``message_id`` belongs to."""
        ledgers = self.ledgers
        return ledgers[0] if len(ledgers) == 1 else ledgers[shard_of(message_id, len(ledgers))]

    def shards_of(self, message_ids: Iterable[str]) -> tuple[int, ...]:
        """The shards ``message_ids`` belong to, each once, in ascending order (the lock order)."""
        count = len(self.ledgers)
        if count == 1:
            return (0,)
        return tuple(sorted({shard_of(message_id, count) for message_id in message_ids}))

    def write_in_format(self, version: int) -> None:
        """Build every shard's entries in hash format ``version`` (see :meth:`Ledger.write_in_format`)."""
        for ledger in self.ledgers:
            ledger.write_in_format(version)

    def ledgered(self, row: Mapping[str, Any], *, fallback: bool = False) -> LedgeredRow:
        """``row`` with its record entry's digests (they do not depend on the chain: any shard's ledger makes them)."""
        return self.ledgers[0].ledgered(row, fallback=fallback)

    def take_appended(self) -> list[AppendedEntries]:
        """What the last committed batch appended, per chain it appended to (see :meth:`Ledger.take_appended`)."""
        appended = [ledger.take_appended() for ledger in self.ledgers]
        return [each for each in appended if each.entries]


def shard_checkpoints(
    sharded: ShardedChains, against: Checkpoint | Sequence[Checkpoint] | None
) -> list[Checkpoint | None]:
    """``against`` as one checkpoint (or ``None``) per shard of ``sharded``, in shard order.

    ``against`` is a checkpoint of one shard's chain, or several (each of a
    different shard: what ``trail.checkpoint()`` returns for a sharded trail).
    A checkpoint of a chain that is not one of the shards is a
    :class:`~audit_plugin.exceptions.ChainError`.
    """
    per_shard: list[Checkpoint | None] = [None] * sharded.shards
    if against is None:
        return per_shard
    given = [against] if isinstance(against, Checkpoint) else against
    if isinstance(given, str | bytes) or not isinstance(given, Sequence):
        raise v.FieldTypeError("against", "Checkpoint or a sequence of them", against)
    index = {chain_id: shard for shard, chain_id in enumerate(sharded.chain_ids)}
    for checkpoint in given:
        if not isinstance(checkpoint, Checkpoint):
            raise v.FieldTypeError("against", "Checkpoint", checkpoint)
        shard = index.get(checkpoint.chain_id)
        if shard is None:
            raise ChainError(
                f"checkpoint is of chain {checkpoint.chain_id!r}, not a shard of chain {sharded.base_id!r} "
                f"({sharded.shards} shards: {sharded.chain_ids[0]!r} ...)"
            )
        if per_shard[shard] is not None:
            raise InvalidFieldError("against", f"holds two checkpoints of chain {checkpoint.chain_id!r}")
        per_shard[shard] = checkpoint
    return per_shard
