"""CORS for browser callers (the CDS Hooks sandbox), and a warning when one is refused.

A browser refuses the service's answer when the response carries no
``Access-Control-Allow-Origin`` for the page's origin, yet the service has answered 200:
its own log looks healthy while the sandbox shows "All clear!". So each refused origin
is logged once (again after an hour), naming ``CDS_CORS_ORIGINS``; the number of origins
logged per hour is capped, since any page can send any ``Origin``. Each worker process
keeps its own account, so with several workers the line may come once from each.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable
from typing import Any

from flask import Flask, Response, request, request_finished
from flask_cors import CORS

from cds_hooks.config import Settings

log = logging.getLogger(__name__)

CORS_HEADERS = ["Authorization", "Content-Type", "Accept"]
WARNING_INTERVAL_SECONDS = 3600.0
WARNED_ORIGINS_PER_INTERVAL = 100
_ORIGIN = re.compile(r"null|[A-Za-z][A-Za-z0-9+.-]{0,15}://[A-Za-z0-9.:\[\]-]{1,262}", re.ASCII)
"""What a browser sends as ``Origin``; anything else is logged as malformed, not quoted."""
_EXTENSION = "baclofen_refused_origins"


class RefusedOrigins:
    """Which refused origins were logged and when, so each is logged once per interval."""

    def __init__(
        self,
        interval: float = WARNING_INTERVAL_SECONDS,
        capacity: int = WARNED_ORIGINS_PER_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._interval = interval
        self._capacity = capacity
        self._clock = clock
        self._logged: dict[str, float] = {}
        self._lock = threading.Lock()

    def first_in_interval(self, origin: str) -> bool:
        """True when ``origin`` should be logged now (and remember that it was)."""
        with self._lock:
            now = self._clock()
            last = self._logged.get(origin)
            if last is not None and now - last < self._interval:
                return False
            if last is None and len(self._logged) >= self._capacity:
                self._logged = {o: t for o, t in self._logged.items() if now - t < self._interval}
                if len(self._logged) >= self._capacity:
                    return False
            self._logged[origin] = now
            return True


def init_cors(app: Flask, settings: Settings) -> None:
    # always_send=False: a call without an Origin header (an EHR's server, not a browser)
    # gets no CORS headers. flask-cors would otherwise grant it the allowlist's first
    # origin, the local development one included, on every response.
    CORS(
        app,
        origins=list(settings.cors_origins),
        allow_headers=CORS_HEADERS,
        methods=["GET", "POST", "OPTIONS"],
        max_age=600,
        always_send=False,
    )
    app.extensions[_EXTENSION] = RefusedOrigins()
    # request_finished rather than after_request: it sees the response after flask-cors's
    # own after_request has (or has not) granted the origin.
    request_finished.connect(_warn_if_refused, app)


def _warn_if_refused(sender: Flask, response: Response, **_: Any) -> None:
    origin = request.headers.get("Origin")
    if origin is None or "Access-Control-Allow-Origin" in response.headers:
        return
    shown = origin if _ORIGIN.fullmatch(origin) else "(malformed Origin header)"
    if not sender.extensions[_EXTENSION].first_in_interval(shown):
        return
    settings: Settings = sender.extensions["baclofen_settings"]
    log.warning(
        "browser origin %s is not in CDS_CORS_ORIGINS: the browser will not show this "
        "service's answers to that page (this request was answered, the page cannot read "
        "it). To allow it, add the origin to CDS_CORS_ORIGINS (comma-separated). "
        "Logged once an hour per origin.",
        shown,
        extra={"origin": shown, "cors_origins": list(settings.cors_origins)},
    )
