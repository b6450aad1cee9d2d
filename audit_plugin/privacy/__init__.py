"""Privacy: what of a payload is kept — checked, redacted, capped, encrypted — and erasure.

Owns :mod:`~audit_plugin.privacy.capture` (a message's one pass from a send
path to the writer's queue, the payload policy), :mod:`~audit_plugin.privacy.redaction`
(masking sensitive fields), :mod:`~audit_plugin.privacy.crypto` (AES-GCM per
data subject, keys wrapped by a master key; opening and crypto-shredding)
and :mod:`~audit_plugin.privacy.protection` (all of it for one trail).
"""

from __future__ import annotations

from audit_plugin.privacy.capture import MessageCapture, PayloadCapture, PayloadPolicy
from audit_plugin.privacy.crypto import KeyProvider, LocalKeyFileProvider
from audit_plugin.privacy.protection import PayloadProtection
from audit_plugin.privacy.redaction import FieldRedactor

__all__ = [
    "FieldRedactor",
    "KeyProvider",
    "LocalKeyFileProvider",
    "MessageCapture",
    "PayloadCapture",
    "PayloadPolicy",
    "PayloadProtection",
]
