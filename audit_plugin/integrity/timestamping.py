"""External anchoring: an RFC 3161 time-stamp authority (TSA) signs that a checkpoint existed at a time.

The trail's own clock proves nothing to an outsider; a time-stamp token does:
the TSA signs ``SHA-256(the signed checkpoint note)`` with its time. Anyone
who trusts the TSA's certificate authority then knows the log had reached
that tree head by then, so entries it includes cannot have been written
later. The token is the TSA's whole ``TimeStampResp`` (DER), stored with the
checkpoint and copied into proof bundles.

Requests and tokens are built and checked with ``rfc3161-client`` (the
``tsa`` extra; it also needs ``cryptography``), sent with the standard
library's HTTP client.
"""

from __future__ import annotations

import hashlib
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from audit_plugin.exceptions import AuditError

CONTENT_TYPE_QUERY = "application/timestamp-query"
MAX_RESPONSE_BYTES = 1 << 20


class TimestampError(AuditError):
    """A time-stamp could not be obtained, or a token does not check (the message says why, on one line)."""


def _library() -> Any:
    try:
        import rfc3161_client
    except ImportError as exc:
        raise TimestampError(
            f"RFC 3161 time-stamps need the tsa extra ({exc.name} is missing): pip install 'audit-plugin[tsa]'"
        ) from None
    return rfc3161_client


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text[:200] + ("…" if len(text) > 200 else "")


@dataclass(frozen=True, slots=True)
class TimestampCheck:
    """What a token says: its time, and whether its signature was checked against a trusted TSA certificate."""

    time: datetime
    verified: bool


def request_timestamp(url: str, note: str, *, timeout: float = 30.0) -> bytes:
    """Ask the TSA at ``url`` to time-stamp ``note``; return its response (DER), checked to answer this request."""
    if not url.startswith(("http://", "https://")):
        raise TimestampError(f"the TSA URL must be http:// or https://, got {url!r}")
    library = _library()
    data = note.encode()
    request = library.TimestampRequestBuilder().data(data).hash_algorithm(library.HashAlgorithm.SHA256).build()
    http = urllib.request.Request(
        url, data=request.as_bytes(), headers={"Content-Type": CONTENT_TYPE_QUERY}, method="POST"
    )
    try:
        with urllib.request.urlopen(http, timeout=timeout) as answer:
            body = answer.read(MAX_RESPONSE_BYTES + 1)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise TimestampError(f"the TSA at {url} did not answer: {_one_line(exc)}") from None
    if len(body) > MAX_RESPONSE_BYTES:
        raise TimestampError(f"the TSA at {url} answered more than 1 MiB")
    response = _parse(library, body)
    if response.tst_info.nonce != request.nonce:
        raise TimestampError(f"the TSA at {url} answered another request (nonce differs)")
    _check_imprint(response, data)
    return body


def _parse(library: Any, token: bytes) -> Any:
    try:
        response = library.decode_timestamp_response(token)
    except ValueError as exc:
        raise TimestampError(f"the time-stamp token cannot be read: {_one_line(exc)}") from None
    if response.status not in (library.PKIStatus.GRANTED, library.PKIStatus.GRANTED_WITH_MODS):
        raise TimestampError(f"the TSA refused the time-stamp (status {response.status})")
    return response


def _check_imprint(response: Any, data: bytes) -> None:
    if response.tst_info.message_imprint.message != hashlib.sha256(data).digest():
        raise TimestampError("the time-stamp token is for other data than this checkpoint")


def check_timestamp(token: bytes, note: str, trusted: Sequence[Any] = ()) -> TimestampCheck:
    """Check that ``token`` time-stamps ``note``; with ``trusted`` CA certificates, that a TSA they certify signed it.

    ``trusted`` are ``cryptography`` ``x509.Certificate`` objects. Without
    them the token's time is read but its signature is not checked
    (``verified`` is false).
    """
    library = _library()
    response = _parse(library, token)
    data = note.encode()
    _check_imprint(response, data)
    if trusted:
        try:
            library.VerifierBuilder(roots=list(trusted)).build().verify_message(response, data)
        except (library.VerificationError, ValueError) as exc:
            raise TimestampError(
                f"the time-stamp token is not signed by a TSA the given certificates trust: {_one_line(exc)}"
            ) from None
    return TimestampCheck(response.tst_info.gen_time, bool(trusted))
