"""Sink destination URLs and the syslog message format, for any input (property tests)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from audit_plugin.exceptions import InvalidFieldError
from audit_plugin.sinks.address import (
    FACILITIES,
    JsonLinesAddress,
    OtlpAddress,
    SyslogAddress,
    parse_destination,
)
from audit_plugin.sinks.syslog import SyslogFormat, sd_value, structured_data

hosts = st.sampled_from(["127.0.0.1", "localhost", "siem.example.com", "[::1]", "[fe80::1%25eth0]"])
ports = st.none() | st.integers(1, 65535)
schemes = st.sampled_from(["syslog+tcp", "syslog+tls", "otlp+http", "otlp+https", "jsonl", "SYSLOG+TCP", "udp"])
parameters = st.dictionaries(
    st.sampled_from(["facility", "app_name", "sd_id", "ca", "cert", "key", "headers", "timeout", "fsync", "x"]),
    st.text(max_size=12) | st.sampled_from(["local0", "13", "audit@32473", "5", "true", "a=b,c=d"]),
    max_size=3,
)


@st.composite
def destination_urls(draw: st.DrawFn) -> str:
    scheme, host, port = draw(schemes), draw(hosts), draw(ports)
    query = "&".join(f"{name}={value}" for name, value in draw(parameters).items())
    if scheme == "jsonl":
        return f"jsonl:{draw(st.sampled_from(['-', '///tmp/a.jsonl', 'rel.jsonl', '//host/x', '']))}" + (
            f"?{query}" if query else ""
        )
    return f"{scheme}://{host}{f':{port}' if port is not None else ''}{draw(st.sampled_from(['', '/', '/p']))}" + (
        f"?{query}" if query else ""
    )


@settings(max_examples=500)
@given(url=destination_urls() | st.text(max_size=80))
def test_any_url_is_a_destination_or_an_error_naming_the_option(url: str) -> None:
    try:
        address = parse_destination(url, field_name="--to")
    except InvalidFieldError as exc:
        assert exc.field == "--to" and exc.reason
        return
    assert isinstance(address, SyslogAddress | OtlpAddress | JsonLinesAddress)
    if isinstance(address, SyslogAddress):
        assert 1 <= address.port <= 65535 and 0 <= address.facility < len(FACILITIES)
        again = parse_destination(address.display)  # what logs and metrics show names the same receiver
        assert (again.host, again.port, again.tls) == (address.host, address.port, address.tls)  # type: ignore[union-attr]
    elif isinstance(address, OtlpAddress):
        assert re.fullmatch(r"https?://\S+:\d+/(\S*/)?v1/logs", address.endpoint), address.endpoint
        assert parse_destination(address.display).endpoint == address.endpoint  # type: ignore[union-attr]
        assert all(value not in address.display for _, value in address.headers if value)  # no credentials shown


def test_destination_urls_say_what_is_wrong() -> None:
    cases = {
        "syslog+udp://h": "not a destination URL",
        "syslog+tcp://h?facilty=local0": "takes no parameter facilty",
        "syslog+tcp://h?facility=local9": "not a syslog facility",
        "syslog+tcp://h:0": "port 0",
        "syslog+tcp://h:70000": "out of range",
        "syslog+tcp://h/path": "no path",
        "syslog+tcp://h?sd_id=audit": "NAME@ENTERPRISE-NUMBER",
        "syslog+tls://h?key=k.pem": "key= needs cert=",
        "otlp+http://user:secret@h": "credentials",
        "otlp+http://h?timeout=0": "timeout=",
        "otlp+http://h?headers=novalue": "name=value",
        "jsonl:": "not a destination URL",
        "jsonl://host/x": "takes a path",
        "jsonl:x?fsync=maybe": "fsync=",
        "syslog+tcp://h\n": "control character",
    }
    for url, reason in cases.items():
        with pytest.raises(InvalidFieldError, match=re.escape(reason)):
            parse_destination(url)


def test_destination_defaults() -> None:
    assert parse_destination("syslog+tcp://siem") == SyslogAddress("siem", 514)
    assert parse_destination("syslog+tls://siem").port == 6514  # type: ignore[union-attr]
    assert parse_destination("otlp+http://collector").endpoint == "http://collector:4318/v1/logs"  # type: ignore[union-attr]
    assert parse_destination("jsonl:-") == JsonLinesAddress(None)
    assert parse_destination("jsonl:///var/log/a.jsonl") == JsonLinesAddress(Path("/var/log/a.jsonl"))


def sd_unescape(value: str) -> str:
    return re.sub(r"\\(.)", r"\1", value)


@settings(max_examples=300)
@given(values=st.dictionaries(st.sampled_from(["from_agent", "to_agent", "correlation_id"]), st.text(max_size=40)))
def test_structured_data_values_are_escaped_and_read_back(values: dict[str, str]) -> None:
    document = {"event": "record", "sequence": 3, "record": values}
    sd = structured_data(document, "audit@32473")
    assert sd.startswith("[audit@32473 ") and sd.endswith("]")
    params = re.findall(r' (\w+)="((?:[^"\\\]]|\\.)*)"', sd[1:-1])  # no bare ", ] or \ inside a value
    assert "".join(f' {name}="{value}"' for name, value in params) == sd[len("[audit@32473") : -1]
    read = {name: sd_unescape(value) for name, value in params}
    assert read == {"event": "record", "sequence": "3", **values}
    assert sd_value('a"b]c\\') == 'a\\"b\\]c\\\\'


@given(hostname=st.text(max_size=300), event=st.text(max_size=40))
def test_syslog_headers_are_printable_ascii_whatever_the_host_and_event(hostname: str, event: str) -> None:
    message = SyslogFormat(SyslogAddress("h", 514), hostname=hostname, procid=7).message({"event": event, "at": None})
    *fields, rest = message.decode("utf-8").split(" ", 6)
    assert rest.startswith("[audit@32473 ")  # the header's six fields held no space
    assert len(fields) == 6 and fields[0] == "<134>1"  # PRI (local0.info) VERSION, then five fields
    assert all(re.fullmatch(r"[!-~]+", field) for field in fields[1:])
    assert len(fields[2]) <= 255 and len(fields[5]) <= 32  # HOSTNAME, MSGID
