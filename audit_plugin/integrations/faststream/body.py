"""A FastStream message body as a record's payload, the same on the publish and the consume side.

The body is captured the way FastStream puts it on the wire: a published
object goes through the producer's own codec and serializer (FastStream's
``encode_message`` by default, so ``datetime``, ``Decimal``, ``UUID``,
pydantic models and dataclasses come out as FastStream sends them), and the
bytes are read back as FastStream's ``decode_message`` reads them
(:meth:`~audit_plugin.integrations.payloads.Body.payload`), without running a
custom decoder. So a record made by the publisher and one made by a consumer
from the same bytes hold the same payload.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

from audit_plugin.integrations.payloads import Body


def is_plain_dict(body: Any) -> bool:
    """A dict body, recorded as it is (the store checks it is strict JSON; see :func:`encoded`)."""
    return type(body) is dict


async def encoded(body: Any, call_next: Callable[..., Any]) -> Body:
    """``body`` as the producer that ``call_next`` ends in will encode it (its codec and serializer).

    A native broker message (an ``aio_pika.Message``) is taken as it is: its
    ``body`` and ``content_type``. Raises whatever the codec raises.
    """
    if body is None:
        return Body(b"")
    if isinstance(body, bytes | bytearray | memoryview):
        return Body(bytes(body))
    native = getattr(body, "body", None)
    if isinstance(native, bytes) and hasattr(body, "content_type"):  # aio_pika.Message and the like
        return Body(native, getattr(body, "content_type", None) or None)
    codec, serializer = _codec_of(call_next)
    data, content_type = await codec.encode(body, serializer)
    return Body(bytes(data), content_type)


def _codec_of(call_next: Callable[..., Any]) -> tuple[Any, Any]:
    """The codec and serializer of the producer at the end of a publish middleware chain.

    FastStream chains publish middlewares as ``partial(scope, next)`` down to
    the producer's bound ``publish``/``request``/``publish_batch``; the
    producer holds the codec and serializer the broker gave it. When none is
    found (a test producer without one), FastStream's defaults.
    """
    step: Any = call_next
    for _ in range(64):  # a middleware chain is short; never loop on a strange one
        if isinstance(step, partial) and step.args:
            step = step.args[0]
        else:
            break
    producer = getattr(step, "__self__", None)
    codec = getattr(producer, "codec", None)
    serializer = getattr(producer, "serializer", None)
    if serializer is None:
        serializer = getattr(getattr(getattr(producer, "broker", None), "config", None), "fd_config", None)
        serializer = getattr(serializer, "_serializer", None)
    if codec is None or not callable(getattr(codec, "encode", None)):
        from faststream._internal.parser import DefaultCodec

        codec = DefaultCodec()
    return codec, serializer
