"""The built-in redactor: masks values stored under sensitive field names, anywhere in a payload.

Names are matched case-insensitively, with ``-`` and ``_`` treated alike
(``API-Key`` matches ``api_key``). The whole value under a matching key is
replaced by the mask, whatever its type. A payload with no matching key is
returned as the very same object: the common case costs one walk over the
payload and no copy.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from audit_plugin.exceptions import PayloadTooDeepError
from audit_plugin.model.markers import MARKER_KEY
from audit_plugin.model.validation import DEFAULT_MAX_DEPTH

DEFAULT_SENSITIVE_FIELDS: frozenset[str] = frozenset(
    {
        "password",
        "passwd",
        "passphrase",
        "secret",
        "client_secret",
        "token",
        "access_token",
        "refresh_token",
        "id_token",
        "api_key",
        "apikey",
        "x_api_key",
        "authorization",
        "proxy_authorization",
        "cookie",
        "set_cookie",
        "private_key",
        "credit_card",
        "card_number",
        "cvv",
        "ssn",
    }
)
"""Field names masked by default (normalised: lower case, ``_`` for ``-``)."""

MASK = "[REDACTED]"
"""What a redacted value is replaced with."""

_CACHE_LIMIT = 10_000
_CONTAINERS = (dict, list, tuple)


def normalise_field_name(name: str) -> str:
    return name.lower().replace("-", "_")


class FieldRedactor:
    """Masks the values of sensitive keys in nested dicts and lists.

    :param fields: field names to mask (matched after
        :func:`normalise_field_name`); the default is
        :data:`DEFAULT_SENSITIVE_FIELDS`.
    :param mask: the replacement value.
    :param max_depth: deeper nesting raises
        :class:`~audit_plugin.exceptions.PayloadTooDeepError` (the walk that
        looks for sensitive keys is also the payload's depth check).
    """

    def __init__(
        self, fields: Iterable[str] = DEFAULT_SENSITIVE_FIELDS, *, mask: Any = MASK, max_depth: int = DEFAULT_MAX_DEPTH
    ) -> None:
        self.fields = frozenset(normalise_field_name(name) for name in fields)
        self.mask = mask
        self.max_depth = max_depth
        self._verdicts: dict[str, bool] = {}
        self._plain: set[str] = set()
        """The keys of :attr:`_verdicts` found not sensitive: a dict whose keys are all here has none to mask."""

    def is_sensitive(self, key: object) -> bool:
        if not isinstance(key, str):
            return False
        verdict = self._verdicts.get(key)
        if verdict is None:
            verdict = normalise_field_name(key) in self.fields
            if len(self._verdicts) >= _CACHE_LIMIT:
                self._verdicts.clear()
                self._plain.clear()
            self._verdicts[key] = verdict
            if not verdict:
                self._plain.add(key)
        return verdict

    def redact(self, payload: dict[str, Any], field: str = "payload") -> dict[str, Any]:
        """``payload`` itself if nothing is sensitive, else a copy with sensitive values masked."""
        if not self._has_sensitive_key(payload, field):
            return payload
        return self._masked(payload)

    def _has_sensitive_key(self, payload: object, field: str) -> bool:
        found = False
        plain = self._plain
        stack: list[tuple[object, int]] = [(payload, 1)]
        while stack:
            item, depth = stack.pop()
            if depth > self.max_depth:
                raise PayloadTooDeepError(field, self.max_depth)
            if isinstance(item, dict):
                if not found and not plain.issuperset(item):  # keys seen before and found plain need no look-up
                    found = any(self.is_sensitive(key) for key in item)
                values: Iterable[object] = item.values()
            elif isinstance(item, list | tuple):
                values = item
            else:
                continue
            for value in values:
                if isinstance(value, _CONTAINERS):
                    stack.append((value, depth + 1))
        return found

    def _masked(self, value: Any) -> Any:
        if isinstance(value, dict):
            return {key: self.mask if self.is_sensitive(key) else self._masked(item) for key, item in value.items()}
        if isinstance(value, list | tuple):
            return [self._masked(item) for item in value]
        return value


def masked_values(payload: Any) -> Any:
    """``payload`` with its shape kept and every value masked: what the ``reader`` role sees.

    Keys and nesting stay (``{"order": {"id": "[REDACTED]"}, "items": ["[REDACTED]"]}``);
    a marker (an envelope, a truncated, erased or unreadable payload) keeps
    its ``"$audit"`` kind and nothing else but an encrypted payload's key id.
    """
    if isinstance(payload, dict):
        marker = payload.get(MARKER_KEY)
        if isinstance(marker, str):
            return {MARKER_KEY: marker, **({"kid": payload["kid"]} if "kid" in payload else {})}
        return {key: masked_values(value) for key, value in payload.items()}
    if isinstance(payload, list):
        return [masked_values(value) for value in payload]
    return MASK
