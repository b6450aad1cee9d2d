"""libpq's TLS query parameters (``sslmode``, ``sslrootcert``, ``sslcert``, ``sslkey``) mapped to asyncpg's ``ssl``.

asyncpg takes TLS settings as one ``ssl`` connect argument (a mode name or
an :class:`ssl.SSLContext`), not as the URL parameters every PostgreSQL
user knows, so a URL such as
``postgresql+asyncpg://audit@db/audit?sslmode=verify-full&sslrootcert=/etc/ssl/db-ca.pem``
is read here, with libpq's meanings:

* ``disable``: no TLS; ``allow``, ``prefer``: TLS if the server offers it;
* ``require``: TLS, the certificate not checked (checked against
  ``sslrootcert`` when one is given, as libpq does);
* ``verify-ca``: TLS, the certificate signed by ``sslrootcert`` (or the
  system's CAs); ``verify-full``: that, and the certificate names the host.

``sslcert`` and ``sslkey`` present a client certificate (``sslpassword``
opens an encrypted key; it is masked wherever it could be shown). A bad mode, a file
that does not exist, or a key without a certificate is a typed error naming
the parameter, before anything connects.
"""

from __future__ import annotations

import os
import ssl
from typing import Any

from sqlalchemy.engine import make_url

from audit_plugin.exceptions import InvalidFieldError
from audit_plugin.masking import remember_secret

SSL_MODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")
SSL_PARAMETERS = ("sslmode", "sslrootcert", "sslcert", "sslkey", "sslpassword")


def split_ssl(url: str) -> tuple[str, Any]:
    """``url`` without its TLS parameters, and the ``ssl`` connect argument they mean (``None``: none given)."""
    parsed = make_url(url)
    query = dict(parsed.query)
    given = {name: query.pop(name) for name in SSL_PARAMETERS if name in query}
    if not given:
        return url, None
    for name, value in given.items():
        if not isinstance(value, str):
            raise InvalidFieldError("database_url", f"{name} is given more than once")
    stripped = parsed.set(query=query).render_as_string(hide_password=False)
    return stripped, ssl_argument(**given)


def ssl_argument(
    sslmode: str = "prefer",
    sslrootcert: str | None = None,
    sslcert: str | None = None,
    sslkey: str | None = None,
    sslpassword: str | None = None,
) -> Any:
    """asyncpg's ``ssl`` for libpq's parameters (see the module); ``sslpassword`` opens an encrypted ``sslkey``."""
    remember_secret(sslpassword)
    if sslmode not in SSL_MODES:
        raise InvalidFieldError("database_url", f"sslmode {sslmode!r} is not one of {', '.join(SSL_MODES)}")
    for name, path in (("sslrootcert", sslrootcert), ("sslcert", sslcert), ("sslkey", sslkey)):
        if path is not None and not os.path.isfile(path):
            raise InvalidFieldError("database_url", f"{name}: no file at {path!r}")
    if (sslcert is None) != (sslkey is None):
        raise InvalidFieldError("database_url", "sslcert and sslkey go together (the client certificate and its key)")
    if sslmode == "disable":
        return False
    if sslmode in ("allow", "prefer") and sslcert is None:
        return sslmode
    context = ssl.create_default_context(cafile=sslrootcert)
    verify = sslmode in ("verify-ca", "verify-full") or (sslmode == "require" and sslrootcert is not None)
    context.check_hostname = sslmode == "verify-full"
    if not verify:
        context.verify_mode = ssl.CERT_NONE
    if sslcert is not None:
        try:
            context.load_cert_chain(sslcert, sslkey, password=sslpassword)
        except (ssl.SSLError, OSError) as exc:
            raise InvalidFieldError("database_url", f"sslcert/sslkey cannot be loaded: {exc.strerror or exc}") from None
    return context
