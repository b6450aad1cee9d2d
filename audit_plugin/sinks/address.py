"""Where a sink sends: the destination URLs, parsed and checked before anything connects.

====================================================  ==============================================
``syslog+tcp://HOST[:514]``                            RFC 5424 over TCP (octet-counted frames)
``syslog+tls://HOST[:6514]?ca=CA.pem``                 the same over TLS (RFC 5425); ``cert``/``key``
                                                       for a client certificate, ``server_name``
``otlp+http://HOST[:4318][/PATH]``                     OpenTelemetry logs, OTLP/HTTP protobuf
``otlp+https://HOST[:4318][/PATH]?ca=CA.pem``          the same over TLS
``jsonl:///ABSOLUTE/PATH``, ``jsonl:RELATIVE/PATH``    JSON Lines appended to a file
``jsonl:-``                                            JSON Lines on standard output
====================================================  ==============================================

Syslog takes ``facility`` (a name such as ``local0``, the default, or a
number 0-23), ``app_name`` (default ``audit-plugin``) and ``sd_id`` (the
structured-data id, default ``audit@32473``: 32473 is the enterprise number
RFC 5612 sets aside for examples; use your own). OTLP takes ``headers``
(``name=value,name=value``, as ``OTEL_EXPORTER_OTLP_HEADERS``), ``timeout``
(seconds per request, default 10) and ``service_name`` (default
``audit-plugin``). JSON Lines takes ``fsync=true`` (sync the file after each
write). A parameter a destination does not take is an error, so a typo is
not silently ignored; every error is an
:class:`~audit_plugin.exceptions.InvalidFieldError` naming ``field``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qsl, unquote, urlsplit

from audit_plugin.exceptions import InvalidFieldError

_FACILITY_NAMES = (
    *("kern", "user", "mail", "daemon", "auth", "syslog", "lpr", "news", "uucp", "cron", "authpriv", "ftp"),
    *("ntp", "audit", "alert", "clock"),
    *(f"local{n}" for n in range(8)),
)
FACILITIES: Mapping[str, int] = {name: code for code, name in enumerate(_FACILITY_NAMES)}
"""RFC 5424 facility names and their codes (``local0`` is 16)."""

SCHEMES = ("syslog+tcp", "syslog+tls", "otlp+http", "otlp+https", "jsonl")
DEFAULT_SD_ID = "audit@32473"
DEFAULT_APP_NAME = "audit-plugin"
OTLP_LOGS_PATH = "/v1/logs"
MAX_OTLP_TIMEOUT = 300.0

_SD_NAME = re.compile(r"[!#-<>-\\^-~]{1,32}")  # printable US-ASCII but space, '=', ']' and '"'
_APP_NAME = re.compile(r"[!-~]{1,48}")
_HOST = re.compile(r"[A-Za-z0-9._:%-]{1,253}")  # a DNS name (IDN as punycode), IPv4, or IPv6 (with a zone)
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")


@dataclass(frozen=True, slots=True)
class SyslogAddress:
    """A syslog receiver: ``syslog+tcp://`` or ``syslog+tls://``."""

    host: str
    port: int
    tls: bool = False
    ca: Path | None = None
    cert: Path | None = None
    key: Path | None = None
    server_name: str | None = None
    facility: int = FACILITIES["local0"]
    app_name: str = DEFAULT_APP_NAME
    sd_id: str = DEFAULT_SD_ID

    @property
    def kind(self) -> str:
        return "syslog"

    @property
    def display(self) -> str:
        """The URL to show in messages and logs."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"syslog+{'tls' if self.tls else 'tcp'}://{host}:{self.port}"


@dataclass(frozen=True, slots=True)
class OtlpAddress:
    """An OTLP/HTTP logs receiver (a collector)."""

    endpoint: str
    """The full URL requests go to: ``http://host:4318/v1/logs``."""
    headers: tuple[tuple[str, str], ...] = ()
    timeout: float = 10.0
    service_name: str = DEFAULT_APP_NAME
    ca: Path | None = None

    @property
    def kind(self) -> str:
        return "otlp"

    @property
    def display(self) -> str:
        """The endpoint, without header values (they may hold credentials)."""
        return "otlp+" + self.endpoint


@dataclass(frozen=True, slots=True)
class JsonLinesAddress:
    """A JSON Lines file (appended to), or standard output when ``path`` is ``None``."""

    path: Path | None = None
    fsync: bool = False

    @property
    def kind(self) -> str:
        return "jsonl"

    @property
    def display(self) -> str:
        return "jsonl:-" if self.path is None else f"jsonl:{self.path}"


Address = SyslogAddress | OtlpAddress | JsonLinesAddress


@dataclass
class _Query:
    """A URL's parameters, each read at most once; any left unread is an error."""

    scheme: str
    given: dict[str, str] = field(default_factory=dict)
    field: str = "url"

    def take(self, name: str) -> str | None:
        return self.given.pop(name, None)

    def done(self) -> None:
        if self.given:
            unknown = ", ".join(sorted(self.given))
            raise InvalidFieldError(self.field, f"{self.scheme}:// takes no parameter {unknown}")


def parse_destination(url: object, *, field_name: str = "url") -> Address:
    """The destination ``url`` names (see the module docs), or an ``InvalidFieldError`` naming ``field_name``."""
    if not isinstance(url, str) or not url.strip():
        raise InvalidFieldError(field_name, f"must be a destination URL such as syslog+tcp://host:514, not {url!r}")
    if "\x00" in url or any(ch in url for ch in "\r\n"):
        raise InvalidFieldError(field_name, "contains a control character")
    scheme, _, rest = url.partition(":")
    scheme = scheme.lower()
    if scheme not in SCHEMES or not rest:
        choices = ", ".join(f"{s}:" if s == "jsonl" else f"{s}://" for s in SCHEMES)
        raise InvalidFieldError(field_name, f"{url!r} is not a destination URL ({choices})")
    if scheme == "jsonl":
        return _json_lines(rest, field_name)
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise InvalidFieldError(field_name, f"{url!r}: {exc}") from None
    if parts.username is not None or parts.password is not None:
        raise InvalidFieldError(field_name, "must not carry credentials (OTLP: pass them in headers=)")
    if not parts.hostname:
        raise InvalidFieldError(field_name, f"{url!r} names no host")
    if not _HOST.fullmatch(parts.hostname):
        raise InvalidFieldError(field_name, f"{parts.hostname!r} is not a host name or address")
    if port == 0:
        raise InvalidFieldError(field_name, "port 0 is not a port to send to")
    if parts.fragment:
        raise InvalidFieldError(field_name, "must not have a #fragment")
    query = _Query(scheme, _query(parts.query, field_name), field_name)
    if scheme.startswith("syslog"):
        if parts.path not in ("", "/"):
            raise InvalidFieldError(field_name, "a syslog URL has no path")
        address: Address = _syslog(parts.hostname, port, scheme == "syslog+tls", query)
    else:
        address = _otlp(parts.hostname, port, parts.path, scheme == "otlp+https", query)
    query.done()
    return address


def _query(text: str, field_name: str) -> dict[str, str]:
    given: dict[str, str] = {}
    for name, value in parse_qsl(text, keep_blank_values=True):
        if name in given:
            raise InvalidFieldError(field_name, f"parameter {name} is given twice")
        given[name] = value
    return given


def _path(query: _Query, name: str) -> Path | None:
    value = query.take(name)
    if value is None:
        return None
    if not value:
        raise InvalidFieldError(query.field, f"{name}= needs a file path")
    return Path(value)


def _syslog(host: str, port: int | None, tls: bool, query: _Query) -> SyslogAddress:
    facility_text = query.take("facility")
    facility = FACILITIES["local0"]
    if facility_text is not None:
        if facility_text.lower() in FACILITIES:
            facility = FACILITIES[facility_text.lower()]
        elif re.fullmatch(r"[0-9]{1,2}", facility_text) and int(facility_text) < len(FACILITIES):
            facility = int(facility_text)
        else:
            raise InvalidFieldError(query.field, f"facility {facility_text!r} is not a syslog facility (local0...)")
    app_name = query.take("app_name") or DEFAULT_APP_NAME
    if not _APP_NAME.fullmatch(app_name):
        raise InvalidFieldError(query.field, "app_name must be 1 to 48 printable ASCII characters")
    sd_id = query.take("sd_id") or DEFAULT_SD_ID
    if not _SD_NAME.fullmatch(sd_id) or "@" not in sd_id or not sd_id.rpartition("@")[2].isdigit():
        raise InvalidFieldError(query.field, f"sd_id {sd_id!r} must be NAME@ENTERPRISE-NUMBER (at most 32 characters)")
    ca = cert = key = None
    server_name = None
    if tls:
        ca, cert, key = _path(query, "ca"), _path(query, "cert"), _path(query, "key")
        server_name = query.take("server_name") or None
        if key is not None and cert is None:
            raise InvalidFieldError(query.field, "key= needs cert= (the client certificate it belongs to)")
    return SyslogAddress(
        host=host,
        port=port if port is not None else (6514 if tls else 514),
        tls=tls,
        ca=ca,
        cert=cert,
        key=key,
        server_name=server_name,
        facility=facility,
        app_name=app_name,
        sd_id=sd_id,
    )


def _otlp(host: str, port: int | None, path: str, tls: bool, query: _Query) -> OtlpAddress:
    headers = []
    for pair in filter(None, (query.take("headers") or "").split(",")):
        name, equals, value = pair.partition("=")
        name = unquote(name).strip()
        if not equals or not _HEADER_NAME.fullmatch(name):
            raise InvalidFieldError(query.field, f"headers= takes name=value pairs separated by commas, not {pair!r}")
        headers.append((name, unquote(value).strip()))
    timeout_text = query.take("timeout")
    timeout = 10.0
    if timeout_text is not None:
        try:
            timeout = float(timeout_text)
        except ValueError:
            timeout = math.nan
        if not math.isfinite(timeout) or not 0 < timeout <= MAX_OTLP_TIMEOUT:
            raise InvalidFieldError(query.field, f"timeout= must be seconds, above 0 and at most {MAX_OTLP_TIMEOUT:g}")
    service_name = query.take("service_name") or DEFAULT_APP_NAME
    ca = _path(query, "ca") if tls else None
    path = path.rstrip("/")
    if not path.endswith(OTLP_LOGS_PATH):
        path += OTLP_LOGS_PATH
    netloc = f"[{host}]" if ":" in host else host
    endpoint = f"{'https' if tls else 'http'}://{netloc}:{port if port is not None else 4318}{path}"
    return OtlpAddress(endpoint, tuple(headers), timeout, service_name, ca)


def _json_lines(rest: str, field_name: str) -> JsonLinesAddress:
    path_text, _, query_text = rest.partition("?")
    query = _Query("jsonl", _query(query_text, field_name), field_name)
    fsync_text = (query.take("fsync") or "false").lower()
    if fsync_text not in ("true", "false", "1", "0"):
        raise InvalidFieldError(field_name, "fsync= is true or false")
    query.done()
    if path_text.startswith("//"):
        authority, _, path_text = path_text[2:].partition("/")
        if authority:
            raise InvalidFieldError(field_name, "jsonl: takes a path (jsonl:///absolute/path or jsonl:relative/path)")
        path_text = "/" + path_text
    path_text = unquote(path_text)
    if path_text in ("", "/"):
        raise InvalidFieldError(field_name, "jsonl: needs a file path, or - for standard output")
    fsync = fsync_text in ("true", "1")
    if path_text == "-":
        return JsonLinesAddress(None, fsync)
    return JsonLinesAddress(Path(path_text), fsync)
