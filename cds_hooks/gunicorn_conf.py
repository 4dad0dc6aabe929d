"""Gunicorn settings for ``baclofen-cds serve`` and the container, from the environment.

``WEB_CONCURRENCY`` (workers) and ``GUNICORN_THREADS`` follow the usual conventions so
platform defaults apply; SIGTERM gets ``graceful_timeout`` seconds to finish requests.
The server hooks keep Prometheus metrics consistent across workers (``cds_hooks.metrics``),
and gunicorn's own lines are JSON like the app's, so a log shipper parses every line
(plain text with ``CDS_LOG_FORMAT=text``, like the app's). Once the master listens it
logs one "serving on http://…" line, the line a person at a terminal looks for.

Connections are not balanced across workers: the worker that wakes first accepts, and a
gthread worker goes on accepting until it holds ``worker_connections`` (gunicorn's 1000),
so a client's few keep-alive connections can all sit on one worker while another core
idles. We keep gunicorn's default anyway. A cap near the thread count does balance
wrk's 8 or 16 connections, but a worker at its cap stops accepting, and connections
beyond ``workers × cap`` wait in the listen backlog until some held connection closes
(a keep-alive client that stays busy never closes): measured with a cap of 8 on 2
workers, 24 connections gave a p99 of 3.7 s, and a cap of 6 gave 2.2 s at 16 connections
(benchmarks/README.md). An EHR holds a connection pool of a size we do not know, and a
hook answer that late arrives after the EHR has given up: silence, the worse failure.
A cap would also keep new connections off a worker whose threads all wait on FHIR
fetches (up to CDS_FHIR_TOTAL_TIMEOUT), but requests on the connections it already
holds queue there either way. ``GUNICORN_WORKER_CONNECTIONS`` sets a cap for a
deployment that knows its clients never hold more than ``workers × cap`` connections;
gunicorn forces ``Connection: close`` once a worker has ``cap − threads`` idle keep-alive
connections, so keep the cap at least twice ``GUNICORN_THREADS``.

``GUNICORN_REUSE_PORT=1`` balances without a cap: each worker listens on its own
``SO_REUSEPORT`` socket and the kernel spreads new connections over them at random. It
is opt-in because a worker that exits drops the connections queued on its socket, and a
second server of the same user on the same port would share it silently rather than
fail to start; in a container or pod neither happens (benchmarks/README.md).

gunicorn's control socket (``gunicornc``: resize, reload, stop) is off: nothing here uses
it, it would be one more way to stop a clinical service, and its default place under
``$HOME`` is not writable in the container (gunicorn logged an ERROR on every start).
"""

from __future__ import annotations

import glob
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Callable
from typing import Any

from gunicorn import glogging

from cds_hooks.knowledge import KNOWLEDGE_VERSION
from cds_hooks.logging import formatter

METRICS_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"
_created_metrics_dir: str | None = None


def _int(name: str, default: int) -> int:
    value = os.environ.get(name, "")
    return int(value) if value.strip() else default


def options(
    host: str | None = None,
    port: int | None = None,
    workers: int | None = None,
    max_body_bytes: int | None = None,
) -> dict[str, object]:
    """``max_body_bytes``: the app's CDS_MAX_BODY_BYTES, so a request declaring a larger
    body is answered on a connection that closes (``close_when_too_large``)."""
    bind_host = host or os.environ.get("CDS_HOST", "127.0.0.1")
    bind_port = port or _int("CDS_PORT", 8080)
    return {
        "bind": f"{bind_host}:{bind_port}",
        "workers": workers or _int("WEB_CONCURRENCY", 2),
        "threads": _int("GUNICORN_THREADS", 4),
        "worker_connections": _int("GUNICORN_WORKER_CONNECTIONS", 0) or None,
        "reuse_port": os.environ.get("GUNICORN_REUSE_PORT", "").strip().lower()
        in ("1", "true", "yes"),
        "worker_class": "gthread",
        "timeout": _int("GUNICORN_TIMEOUT", 30),
        "graceful_timeout": _int("GUNICORN_GRACEFUL_TIMEOUT", 20),
        "keepalive": 5,
        # X-Forwarded-Proto is not gunicorn's to believe (it would from loopback by
        # default): CDS_TRUSTED_PROXIES decides in the app (cds_hooks.proxy).
        "forwarded_allow_ips": "",
        "accesslog": None,
        "errorlog": "-",
        "loglevel": os.environ.get("CDS_LOG_LEVEL", "info").lower(),
        "worker_tmp_dir": os.environ.get("GUNICORN_WORKER_TMP_DIR") or None,
        "control_socket_disable": True,
        "logger_class": SafeLogger,
        "pre_request": close_when_too_large(max_body_bytes) if max_body_bytes else None,
        "on_starting": on_starting,
        "when_ready": when_ready,
        "child_exit": child_exit,
        "on_exit": on_exit,
    }


MAX_LINE_CHARS = 300
_QUERY = re.compile(r"(?<=\S)\?[^\s'\"]*")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class BoundedCallerText(logging.Filter):
    """Gunicorn's own lines quote what a caller sent: the request line of a malformed
    request ("Invalid request from ip=...: Invalid HTTP request line: '...'"), a bad
    header, the method and path of a request that failed. Each message is cut to
    ``MAX_LINE_CHARS``, its query strings are dropped (a FHIR-style query names the
    patient) and control characters replaced, so a caller can neither bloat the log nor
    put a patient's identifier in it."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = _CONTROL.sub("?", _QUERY.sub("?(query withheld)", record.getMessage()))
        if len(message) > MAX_LINE_CHARS:
            message = message[:MAX_LINE_CHARS] + "... (cut)"
        record.msg, record.args = message, None
        return True


class SafeLogger(glogging.Logger):
    """Gunicorn's error log (start-up, workers booting and exiting, signals, malformed
    requests) in the app's format: JSON lines, or text with ``CDS_LOG_FORMAT=text``;
    caller-sent text bounded."""

    def setup(self, cfg: Any) -> None:
        super().setup(cfg)
        log_format = os.environ.get("CDS_LOG_FORMAT", "json").strip().lower()
        for handler in self.error_log.handlers:
            handler.setFormatter(formatter(log_format, pid=True))
            handler.addFilter(BoundedCallerText())

    def info(self, msg: str, *args: Any, **kwargs: Any) -> None:
        # With SO_REUSEPORT the master holds no socket (each worker opens its own), so
        # gunicorn announces "Listening at:  (pid)": name the address operators look for.
        if msg == _LISTENING and args and not args[0] and self.cfg.reuse_port:
            args = (f"{_addresses(self.cfg.address)} (one socket per worker)", *args[1:])
        super().info(msg, *args, **kwargs)


def close_when_too_large(max_body_bytes: int) -> Callable[[Any, Any], None]:
    """gunicorn's ``pre_request``: a request whose Content-Length is over the limit is
    answered 413 by the app without its body being read, so the connection cannot carry
    another request. Marking it closed makes gunicorn say so (``Connection: close``)
    instead of advertising keep-alive and closing anyway. (A chunked body is only found to
    be too large while the app reads it: gunicorn then reads and discards its rest.)"""

    def pre_request(worker: Any, req: Any) -> None:
        del worker
        for name, value in req.headers:
            if name == "CONTENT-LENGTH" and value.isdigit() and int(value) > max_body_bytes:
                req.force_close()

    return pre_request


_LISTENING = "Listening at: %s (%s)"


def _addresses(bound: list[Any]) -> str:
    """The bind addresses written the way gunicorn writes its own listeners."""
    written = []
    for address in bound:
        if isinstance(address, tuple):
            host, port = address[0], address[1]
            written.append(f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}")
        else:
            written.append(f"unix:{address}")
    return ",".join(written)


def ensure_metrics_dir() -> str:
    """Turn on multiprocess metrics, with a private temporary directory if none is set.

    Must run before ``prometheus_client`` is first imported (it picks its storage then),
    i.e. before the app is imported; the directory is removed again in ``on_exit``. A set
    directory is created when missing: a fresh tmpfs on /tmp (``docker run --read-only
    --tmpfs /tmp``) hides the image's, and every metric would fail to record.
    """
    global _created_metrics_dir
    directory = os.environ.get(METRICS_DIR_ENV)
    if not directory:
        directory = _created_metrics_dir = tempfile.mkdtemp(prefix="baclofen-cds-metrics-")
        os.environ[METRICS_DIR_ENV] = directory
    else:
        os.makedirs(directory, exist_ok=True)
    return directory


def on_starting(server: Any) -> None:
    """Start each server run's metrics from zero: drop the per-process files of the last run.

    Only ``*.db`` files go, so a directory set by mistake to a shared path loses nothing else.
    """
    directory = os.environ.get(METRICS_DIR_ENV)
    if not directory:
        if server.cfg.workers > 1:
            server.log.warning(
                "%s is not set: /metrics shows only the worker that answers the scrape",
                METRICS_DIR_ENV,
            )
        return
    os.makedirs(directory, exist_ok=True)
    for path in glob.glob(os.path.join(directory, "*.db")):
        os.remove(path)


def when_ready(server: Any) -> None:
    """One line, from the master once, saying where to point a browser or curl."""
    scheme = "https" if server.cfg.is_ssl else "http"
    urls = ", ".join(f"{scheme}://{address}" for address in server.cfg.bind)
    server.log.info(
        "serving on %s (%d workers, knowledge %s; Ctrl-C stops)",
        urls,
        server.cfg.workers,
        KNOWLEDGE_VERSION,
    )


def child_exit(server: Any, worker: Any) -> None:
    """Drop a dead worker's live gauges; its counters stay in the totals, as they should."""
    if os.environ.get(METRICS_DIR_ENV):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)


def on_exit(server: Any) -> None:
    if _created_metrics_dir is not None:
        shutil.rmtree(_created_metrics_dir, ignore_errors=True)


def run(
    load: Callable[[], Any],
    host: str | None = None,
    port: int | None = None,
    workers: int | None = None,
    max_body_bytes: int | None = None,
) -> None:
    """Serve the WSGI app that ``load`` builds (once in each worker) with ``options()``.

    Shared by ``baclofen-cds serve`` and the benchmark's bare baseline, so both run under
    exactly the same server settings.
    """
    from gunicorn.app.base import BaseApplication

    settings = {
        key: value
        for key, value in options(host, port, workers, max_body_bytes).items()
        if value is not None
    }

    class Server(BaseApplication):
        def load_config(self) -> None:
            for key, value in settings.items():
                self.cfg.set(key, value)

        def load(self) -> Any:
            return load()

    Server().run()
