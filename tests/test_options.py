"""``AuditOptions``: one options value shared by every recorder, checked where it is written."""

from __future__ import annotations

import pytest
from opentelemetry.sdk.trace import TracerProvider

from audit_plugin import AuditOptions, AuditPlugin, MessageAuditTrail
from audit_plugin.exceptions import FieldTypeError, InvalidFieldError


def test_keywords_override_the_options_value(tmp_path) -> None:
    provider = TracerProvider()
    options = AuditOptions(durability="buffered", commit_timeout=2.0, tracer_provider=provider)
    trail = MessageAuditTrail(f"sqlite+aiosqlite:///{tmp_path / 'a.db'}")
    plugin = AuditPlugin(trail, options=options, commit_timeout=5.0)
    assert plugin.options == AuditOptions(durability="buffered", commit_timeout=5.0, tracer_provider=provider)
    assert (plugin.durability, plugin.commit_timeout) == ("buffered", 5.0)
    assert options.commit_timeout == 2.0  # the shared value is not changed


def test_keywords_alone_make_the_options(tmp_path) -> None:
    trail = MessageAuditTrail(f"sqlite+aiosqlite:///{tmp_path / 'a.db'}")
    assert AuditPlugin(trail, durability="buffered").options == AuditOptions(durability="buffered")
    assert AuditPlugin(trail).options == AuditOptions()


@pytest.mark.parametrize(
    ("fields", "error", "field"),
    [
        ({"durability": "eventually"}, InvalidFieldError, "durability"),
        ({"commit_timeout": -1.0}, InvalidFieldError, "commit_timeout"),
        ({"commit_timeout": float("nan")}, InvalidFieldError, "commit_timeout"),
        ({"commit_timeout": "30"}, FieldTypeError, "commit_timeout"),
        ({"trace_payload": "yes"}, FieldTypeError, "trace_payload"),
    ],
)
def test_a_bad_option_is_refused_with_its_name(fields, error, field) -> None:
    with pytest.raises(error) as refused:
        AuditOptions(**fields)
    assert refused.value.field == field


def test_unknown_keyword_and_wrong_options_type_are_refused(tmp_path) -> None:
    trail = MessageAuditTrail(f"sqlite+aiosqlite:///{tmp_path / 'a.db'}")
    with pytest.raises(TypeError, match="'durabilty'"):
        AuditPlugin(trail, durabilty="buffered")  # type: ignore[call-arg]
    with pytest.raises(FieldTypeError) as wrong:
        AuditPlugin(trail, options={"durability": "buffered"})  # type: ignore[arg-type]
    assert wrong.value.field == "options"
