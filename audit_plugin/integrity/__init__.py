"""Integrity: the hash chain's formats, the ledger that builds and links entries, checkpoints, verification.

Owns :mod:`~audit_plugin.integrity.chain` (the versioned digest and link
formats), :mod:`~audit_plugin.integrity.ledger` (lifecycle entries for a
write batch, numbered and linked), :mod:`~audit_plugin.integrity.checkpoint`
(a chain head, optionally Ed25519-signed) and
:mod:`~audit_plugin.integrity.verify` (the checks a walk of the chain runs).
No database here: the store reads and writes the rows
(:mod:`audit_plugin.storage.chain_store`, :mod:`audit_plugin.storage.chain_walk`).
"""

from __future__ import annotations

from audit_plugin.integrity.checkpoint import Checkpoint
from audit_plugin.integrity.ledger import DEFAULT_CHAIN_ID, ChainHead, Ledger
from audit_plugin.integrity.verify import ChainWalk, VerifyReport

__all__ = ["DEFAULT_CHAIN_ID", "ChainHead", "ChainWalk", "Checkpoint", "Ledger", "VerifyReport"]
