"""Which peers may tell us the URL the caller used (``X-Forwarded-Proto/Host/Port/For``).

Forwarded headers are whatever their sender wrote. They are believed only from the
proxies named in ``CDS_TRUSTED_PROXIES`` (addresses or networks), through werkzeug's
``ProxyFix`` for one proxy hop; from any other peer, and from everyone when the setting
is empty (the default), the request is taken as received. Gunicorn's own trust of
``X-Forwarded-Proto`` from loopback is switched off (``gunicorn_conf``), so this is the
only place that decides.

In ``enforce`` mode the caller-token audience never depends on it: ``CDS_PUBLIC_BASE_URL``
is required there. The request's URL is the audience only in ``sandbox`` mode.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from werkzeug.middleware.proxy_fix import ProxyFix

from cds_hooks.network import ip_literal

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class FromTrustedProxies:
    """WSGI middleware: ``ProxyFix`` for requests whose peer is a trusted proxy only."""

    def __init__(self, app: WSGIApplication, proxies: Iterable[Network]) -> None:
        self.direct = app
        self.proxied = ProxyFix(app, x_for=1, x_proto=1, x_host=1, x_port=1)
        self.proxies = tuple(proxies)

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Any:
        peer = ip_literal(str(environ.get("REMOTE_ADDR") or ""))
        trusted = peer is not None and any(peer in network for network in self.proxies)
        return (self.proxied if trusted else self.direct)(environ, start_response)
