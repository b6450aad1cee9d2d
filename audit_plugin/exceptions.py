"""Every error audit-plugin raises, under one root: :class:`AuditError`.

Input errors also subclass the built-in Python users expect (``ValueError`` or
``TypeError``), the way ``json.JSONDecodeError`` subclasses ``ValueError``, so
``except ValueError`` keeps working in code that does not know this package.
"""

from __future__ import annotations

import asyncio

from audit_plugin.masking import mask_text, mask_url


class AuditError(Exception):
    """Root of every error raised by audit-plugin."""


class InvalidFieldError(AuditError, ValueError):
    """A value was rejected before anything was written.

    ``field`` names the offending field (``"payload"``, ``"message_type"``,
    ``"AuditQuery.limit"``...) and ``reason`` says what was wrong with it.
    """

    def __init__(self, field: str, reason: str) -> None:
        self.field = field
        self.reason = reason
        super().__init__(f"{field}: {reason}")


class FieldTypeError(AuditError, TypeError):
    """A value of the wrong Python type was given for ``field``."""

    def __init__(self, field: str, expected: str, value: object) -> None:
        self.field = field
        self.expected = expected
        super().__init__(f"{field}: expected {expected}, got {type(value).__name__} {preview(value)}")


class PayloadNotSerializableError(InvalidFieldError, TypeError):
    """The message payload cannot be stored as JSON (sets, bytes, NaN, cycles...)."""


class UnsupportedDatabaseURLError(AuditError, ValueError):
    """No installed backend handles the URL's scheme.

    The message names the scheme and, when it is a known one, the
    distribution to install.
    """

    def __init__(self, url: str, scheme: str, package: str | None) -> None:
        self.url = mask_url(url)
        """The URL with any password masked."""
        self.scheme = scheme
        self.package = package
        hint = (
            f"install the backend: pip install {package}"
            if package
            else "no known backend handles it; supported: sqlite+aiosqlite://, postgresql+asyncpg://"
        )
        super().__init__(f"no audit backend for database URL scheme {scheme!r}: {hint}")


class TrailStateError(AuditError, RuntimeError):
    """The trail was used before ``initialize()`` or after ``close()``."""


class AuditStoreError(AuditError):
    """The store failed an operation: refused a write for a reason retrying cannot fix, or failed a read.

    :class:`StoreUnavailableError` is the transient kind.

    The message is the driver's own first line, never the SQL statement or its parameters.
    """


class StoreUnavailableError(AuditStoreError, ConnectionError):
    """The store cannot be reached or is busy (connection lost, server restarting, database locked, disk full).

    Transient: the writer keeps the batch and retries it. A backend raises
    it (or its dialect classifies an error as transient, see
    :mod:`audit_plugin.storage.batch_write`) for failures of the store, not of the
    data; it is a built-in :class:`ConnectionError` too, for code that
    catches that.
    """


class QueueFullError(AuditError, asyncio.QueueFull):
    """The writer's queue is full and the overflow policy is ``"block"``: an operation that cannot wait was refused.

    Also an :class:`asyncio.QueueFull`, for code that catches that.
    """


class RecordDroppedError(AuditError):
    """The writer queue was full and the configured overflow policy dropped the record."""


class AuditTimeoutError(AuditError, TimeoutError):
    """Waiting for the store (a commit, a flush, a close) took longer than allowed."""


class PayloadTooDeepError(PayloadNotSerializableError):
    """The payload nests dicts/lists deeper than the configured limit (or contains a reference cycle)."""

    def __init__(self, field: str, max_depth: int) -> None:
        self.max_depth = max_depth
        super().__init__(field, f"is nested deeper than {max_depth} levels (or contains a reference cycle)")


class PayloadTooLargeError(InvalidFieldError):
    """The serialised payload is larger than the configured cap and the policy is ``"reject"``."""

    def __init__(self, field: str, size: int, max_bytes: int) -> None:
        self.size = size
        self.max_bytes = max_bytes
        super().__init__(field, f"is {size} bytes of JSON, over the {max_bytes}-byte limit")


class EncryptionError(AuditError):
    """Payload encryption is misconfigured or a key could not be used (wrong master key, missing provider)."""


class WriteOnlyTrailError(AuditError, RuntimeError):
    """The trail only publishes (a ``nats://`` transport): query the store its ingesters write to."""


class StoreAuthenticationError(AuditStoreError):
    """A store or transport refused who we are, or a secure connection to it could not be set up.

    Wrong user, password, token, NKey or credentials file; TLS required by
    one side and not offered by the other; a certificate that does not
    verify. Retrying with the same settings cannot help. ``server`` is the
    address (with any password masked) and ``reason`` what went wrong; the
    message never holds a secret.
    """

    def __init__(self, server: str, reason: str) -> None:
        self.server = mask_url(server)
        self.reason = mask_text(reason)
        super().__init__(f"{self.server} refused the connection: {self.reason}")


class AccessDeniedError(AuditError):
    """The reader's role does not allow what was asked (a reader asking for an export, a proof, the access log).

    ``role`` is the role that asked and ``action`` what it asked for.
    """

    def __init__(self, role: str, action: str) -> None:
        self.role = role
        self.action = action
        super().__init__(f"the {role} role may not {action}")


class ChainError(AuditError):
    """The hash chain cannot be used as asked (unknown chain, checkpoint of another chain, bad signature)."""


class DestinationGoneError(AuditError):
    """An export destination will never take more (the reader of standard output went away): stop, do not retry."""


class UnknownIdError(AuditError, LookupError):
    """No record has the id typed, nor one starting (or, for a message id, ending) with it.

    ``fragment`` is what was typed; ``what`` names what was looked for (``"message"``,
    ``"conversation or message"``).
    """

    def __init__(self, fragment: str, what: str) -> None:
        self.fragment = fragment
        self.what = what
        super().__init__(f"no {what} with id {fragment!r} (or starting or ending with it)")


class AmbiguousIdError(AuditError, ValueError):
    """The start (or end) of an id typed names more than one conversation or message.

    ``correlation_ids`` and ``message_ids`` are the matches (at most a few of
    each, sorted); ``more`` says whether there are others besides them.
    """

    def __init__(self, fragment: str, correlation_ids: list[str], message_ids: list[str], *, more: bool) -> None:
        self.fragment = fragment
        self.correlation_ids = correlation_ids
        self.message_ids = message_ids
        self.more = more
        shown = ", ".join(self.matches) + (", ..." if more else "")
        super().__init__(f"{fragment!r} is ambiguous: it matches {shown}; type more of the id")

    @property
    def matches(self) -> list[str]:
        """Every match shown: correlation ids first, then message ids."""
        return [*self.correlation_ids, *self.message_ids]


def preview(value: object, width: int = 80) -> str:
    """``repr(value)`` cut to ``width`` characters, for error messages; never raises.

    An int of more than 4,300 digits has no ``repr`` (Python's conversion
    limit) and an object's own ``__repr__`` may fail: both are described instead.
    """
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 256:
        return f"<{value.bit_length()}-bit integer>"
    try:
        text = repr(value)
    except Exception:
        return f"<{type(value).__name__} without a usable repr>"
    return text[:width]


def driver_message(exc: BaseException) -> str:
    """The first line of the database driver's own message, without SQLAlchemy's wrapper and statement dump.

    Empty when the exception says nothing. Credentials in it (a URL's
    password, a remembered token) are masked.
    """
    text = str(getattr(exc, "orig", None) or exc).strip()
    return mask_text(text.splitlines()[0]) if text else ""
