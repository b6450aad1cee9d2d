"""Payload markers: the dicts the trail stores or returns in place of a payload it does not show.

A marker is a JSON object whose :data:`MARKER_KEY` names what stands there
instead of the payload:

* ``{"$audit": "truncated", "size": ..., "sha256": ...}``: the payload was
  over the size cap (``PayloadPolicy(oversize="truncate")``);
* ``{"$audit": "encrypted", ...}``: encrypted at rest (as stored), or shown
  to a reader without the master key;
* ``{"$audit": "erased", "subject_id": ..., "erased_at": ...}``: its data
  subject was erased (crypto-shredded);
* ``{"$audit": "unreadable", "kid": ..., "reason": ...}``: it could not be
  decrypted;
* ``{"$audit": "not_captured", "reason": ...}``: an integration could not
  record the body as it was (the trail refused it: too large, too deep),
  and the message went on (see :mod:`audit_plugin.integrations.payloads`).

Inside a payload an integration captured from framework objects,
``{"$audit": "bytes" | "not-json" | "cycle" | "too-deep", ...}`` stand for
values JSON cannot hold (see :mod:`audit_plugin.integrations._json`).
"""

from __future__ import annotations

MARKER_KEY = "$audit"
"""Key of the marker dicts the trail stores or returns in place of a payload."""
