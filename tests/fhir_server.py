"""A real HTTP server on 127.0.0.1 that plays the EHR's FHIR server in tests.

Each route answers with a programmable behaviour (JSON, slow, error status, garbage,
redirect, oversize body...) and every request is recorded with its headers, so tests can
assert where the bearer token went. Usage::

    with FhirServer() as server:
        server.route("Patient/p1", ok(patient_resource("p1")))
        server.route("Observation", lambda request: ok(searchset(labs)))
        ...  # point fhirServer at server.base_url
        assert server.requests[0].headers["Authorization"] == "Bearer t"

Routes are matched on the decoded path below ``base_url`` without the query string; the most
specific route wins (``Patient/p1`` before ``Patient``). Unrouted paths get a 404
OperationOutcome, as a FHIR server would.

``FhirServer(keep_alive=True)`` keeps connections open between requests as real servers
do; each recorded request names its connection, and ``open_connections`` names the
connections still open, so tests can see reuse and see a client hang up.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import socket
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlencode, urlsplit

from cds_hooks.config import DefaultConfig, Settings

BASE_PATH = "/fhir"


@dataclass(frozen=True)
class Recorded:
    method: str
    path: str
    """Path and query exactly as received."""
    headers: Mapping[str, str]
    connection: int = 0
    """Serial number of the TCP connection the request came on."""

    @property
    def query(self) -> dict[str, list[str]]:
        return parse_qs(urlsplit(self.path).query)


@dataclass(frozen=True)
class Reply:
    status: int = 200
    body: bytes = b""
    headers: Mapping[str, str] = field(default_factory=dict)
    delay: float = 0.0
    """Seconds to wait before answering (a slow server)."""
    declare_length: bool = True
    """False: no Content-Length, the body ends when the connection closes."""
    trickle: float = 0.0
    """Seconds between single bytes of the body (a server that never quite stops)."""


Behaviour = Reply | Callable[[Recorded], Reply]


def ok(resource: Any, status: int = 200) -> Reply:
    return Reply(
        status=status,
        body=json.dumps(resource).encode(),
        headers={"Content-Type": "application/fhir+json"},
    )


def slow(seconds: float, resource: Any) -> Reply:
    reply = ok(resource)
    return Reply(status=reply.status, body=reply.body, headers=reply.headers, delay=seconds)


def trickle(resource: Any, interval: float) -> Reply:
    reply = ok(resource)
    return Reply(status=reply.status, body=reply.body, headers=reply.headers, trickle=interval)


def status(code: int) -> Reply:
    return ok(operation_outcome(f"HTTP {code}"), status=code)


def garbage() -> Reply:
    return Reply(body=b"<html>not json\x00\xff", headers={"Content-Type": "text/html"})


def redirect(location: str, code: int = 302) -> Reply:
    return Reply(status=code, headers={"Location": location})


def oversize(size: int, declare_length: bool = True) -> Reply:
    body = b'{"resourceType": "Bundle", "type": "searchset", "entry": [' + b" " * size + b"]}"
    return Reply(
        body=body,
        headers={"Content-Type": "application/fhir+json"},
        declare_length=declare_length,
    )


def operation_outcome(message: str = "failed", severity: str = "error") -> dict[str, Any]:
    return {
        "resourceType": "OperationOutcome",
        "issue": [{"severity": severity, "code": "processing", "diagnostics": message}],
    }


def searchset(
    resources: Sequence[Mapping[str, Any]], next_url: str | None = None
) -> dict[str, Any]:
    bundle: dict[str, Any] = {
        "resourceType": "Bundle",
        "type": "searchset",
        "total": len(resources),
        "entry": [{"resource": dict(r)} for r in resources],
    }
    if next_url:
        bundle["link"] = [{"relation": "next", "url": next_url}]
    return bundle


def serve_chart(
    server: FhirServer, resources: Sequence[Mapping[str, Any]], include: bool = True
) -> None:
    """Answer reads and simple searches over ``resources`` like a small FHIR server.

    Supports ``{Type}/{id}`` reads and ``{Type}?patient=&code=&status=&_count=&_sort=-date``
    searches (``code`` as ``system|code`` lists), paging with absolute ``next`` links, and
    ``_include=...:medication`` (the Medications that orders on the page reference) unless
    ``include`` is False, as on servers that ignore it.
    """
    by_type: dict[str, list[Mapping[str, Any]]] = {}
    by_reference: dict[str, Mapping[str, Any]] = {}
    for resource in resources:
        resource_type = str(resource.get("resourceType"))
        by_type.setdefault(resource_type, []).append(resource)
        if "id" in resource:
            by_reference[f"{resource_type}/{resource['id']}"] = resource
            server.route(f"{resource_type}/{resource['id']}", ok(resource))
    for resource_type, items in by_type.items():
        server.route(
            resource_type,
            _searcher(server, resource_type, items, by_reference if include else {}),
        )


def _searcher(
    server: FhirServer,
    resource_type: str,
    items: Sequence[Mapping[str, Any]],
    by_reference: Mapping[str, Mapping[str, Any]],
) -> Callable[[Recorded], Reply]:
    def search(request: Recorded) -> Reply:
        query = {k: v[0] for k, v in request.query.items()}
        found = [r for r in items if _matches(r, query)]
        if query.get("_sort") == "-date":
            found.sort(key=lambda r: str(r.get("effectiveDateTime", "")), reverse=True)
        count = int(query.get("_count", 50))
        offset = int(query.get("_offset", 0))
        page = found[offset : offset + count]
        next_url = None
        if offset + count < len(found):
            rest = {k: v for k, v in query.items() if k != "_offset"}
            rest["_offset"] = str(offset + count)
            next_url = f"{server.base_url}/{resource_type}?" + urlencode(rest)
        bundle = searchset(page, next_url)
        bundle["total"] = len(found)
        if query.get("_include", "").endswith(":medication"):
            references = {(r.get("medicationReference") or {}).get("reference") for r in page}
            bundle["entry"] += [
                {"resource": dict(by_reference[ref]), "search": {"mode": "include"}}
                for ref in sorted(r for r in references if r in by_reference)
            ]
        return ok(bundle)

    return search


def _matches(resource: Mapping[str, Any], query: Mapping[str, str]) -> bool:
    patient = query.get("patient")
    if patient is not None:
        ref = resource.get("subject") or resource.get("patient") or {}
        reference = str(ref.get("reference", "")) if isinstance(ref, Mapping) else ""
        if not (reference.endswith("/" + patient) or reference.endswith(":" + patient)):
            return False
    if "status" in query and resource.get("status") not in query["status"].split(","):
        return False
    if "code" in query:
        wanted = set(query["code"].split(","))
        codings = (resource.get("code") or {}).get("coding") or []
        have = {f"{c.get('system')}|{c.get('code')}" for c in codings} | {
            str(c.get("code")) for c in codings
        }
        if not wanted & have:
            return False
    return True


def make_settings(allowlist: Sequence[str] = (), **overrides: Any) -> Settings:
    """Settings as the app would build them (development env), with test overrides.

    ``overrides`` use config names, e.g. ``FHIR_TOTAL_TIMEOUT=0.5``.
    """
    config = {name: getattr(DefaultConfig, name) for name in dir(DefaultConfig) if name.isupper()}
    config.update(ENV="development", FHIR_ALLOWLIST=list(allowlist), DATABASE_URL="sqlite://")
    config.update(overrides)
    return Settings.from_mapping(config, instance_path=".")


def closed_port_url() -> str:
    """A base URL on loopback where nothing listens (a server that is down)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}{BASE_PATH}"


class FhirServer:
    def __init__(self, keep_alive: bool = False) -> None:
        self.routes: dict[str, Behaviour] = {}
        self.requests: list[Recorded] = []
        self.keep_alive = keep_alive
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._serials = itertools.count(1)
        self._open: dict[int, socket.socket] = {}
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._httpd.daemon_threads = True
        self._httpd.block_on_close = False
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}"

    @property
    def base_url(self) -> str:
        return self.origin + BASE_PATH

    def route(self, path: str, behaviour: Behaviour) -> None:
        self.routes[path.strip("/")] = behaviour

    def requests_to(self, prefix: str) -> list[Recorded]:
        return [r for r in self.requests if r.path.startswith(f"{BASE_PATH}/{prefix}")]

    @property
    def open_connections(self) -> set[int]:
        """Serial numbers of the connections still open."""
        with self._lock:
            return set(self._open)

    def wait_until_closed(self, connections: set[int], timeout: float) -> set[int]:
        """Those of ``connections`` still open once they are all closed or ``timeout`` passed."""
        stop = time.monotonic() + timeout
        while connections & self.open_connections and time.monotonic() < stop:
            time.sleep(0.02)
        return connections & self.open_connections

    def __enter__(self) -> FhirServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stopping.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        with self._lock:
            sockets = list(self._open.values())
        for sock in sockets:  # idle keep-alive connections end their handler threads
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def _reply_for(self, recorded: Recorded) -> Reply:
        path = urlsplit(recorded.path).path
        if not path.startswith(BASE_PATH + "/"):
            return status(404)
        parts = unquote(path[len(BASE_PATH) + 1 :]).strip("/").split("/")
        for end in range(len(parts), 0, -1):
            behaviour = self.routes.get("/".join(parts[:end]))
            if behaviour is not None:
                return behaviour(recorded) if callable(behaviour) else behaviour
        return status(404)

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1" if server.keep_alive else "HTTP/1.0"

            def setup(self) -> None:
                super().setup()
                self.serial = next(server._serials)
                with server._lock:
                    server._open[self.serial] = self.connection

            def finish(self) -> None:
                with server._lock:
                    server._open.pop(self.serial, None)
                with contextlib.suppress(OSError):
                    super().finish()

            def do_GET(self) -> None:
                recorded = Recorded("GET", self.path, dict(self.headers.items()), self.serial)
                with server._lock:
                    server.requests.append(recorded)
                reply = server._reply_for(recorded)
                if reply.delay and server._stopping.wait(reply.delay):
                    self.close_connection = True
                    return
                keep_open = server.keep_alive and reply.declare_length
                try:
                    self.send_response(reply.status)
                    for key, value in reply.headers.items():
                        self.send_header(key, value)
                    if reply.declare_length:
                        self.send_header("Content-Length", str(len(reply.body)))
                    if not keep_open:
                        self.send_header("Connection", "close")
                    self.end_headers()
                    if reply.trickle:
                        self._trickle(reply)
                    else:
                        self.wfile.write(reply.body)
                except (BrokenPipeError, ConnectionResetError):
                    self.close_connection = True
                self.close_connection = self.close_connection or not keep_open

            def _trickle(self, reply: Reply) -> None:
                for index in range(len(reply.body)):
                    if server._stopping.wait(reply.trickle):
                        self.close_connection = True
                        return
                    self.wfile.write(reply.body[index : index + 1])
                    self.wfile.flush()

            def log_message(self, format: str, *args: Any) -> None:
                del format, args

        return Handler
