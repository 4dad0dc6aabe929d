"""Gunicorn settings for ``baclofen-cds serve`` and the container, from the environment.

``WEB_CONCURRENCY`` (workers) and ``GUNICORN_THREADS`` follow the usual conventions so
platform defaults apply; SIGTERM gets ``graceful_timeout`` seconds to finish requests.
The server hooks keep Prometheus metrics consistent across workers (``cds_hooks.metrics``),
and gunicorn's own lines are JSON like the app's, so a log shipper parses every line.

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
import os
import shutil
import tempfile
from collections.abc import Callable
from typing import Any

from gunicorn import glogging

from cds_hooks.logging import SafeJsonFormatter

METRICS_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"
_created_metrics_dir: str | None = None


def _int(name: str, default: int) -> int:
    value = os.environ.get(name, "")
    return int(value) if value.strip() else default


def options(
    host: str | None = None, port: int | None = None, workers: int | None = None
) -> dict[str, object]:
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
        "accesslog": None,
        "errorlog": "-",
        "loglevel": os.environ.get("CDS_LOG_LEVEL", "info").lower(),
        "worker_tmp_dir": os.environ.get("GUNICORN_WORKER_TMP_DIR") or None,
        "control_socket_disable": True,
        "logger_class": JsonLogger,
        "on_starting": on_starting,
        "child_exit": child_exit,
        "on_exit": on_exit,
    }


class JsonLogger(glogging.Logger):
    """Gunicorn's error log (start-up, workers booting and exiting, signals) as JSON lines."""

    def setup(self, cfg: Any) -> None:
        super().setup(cfg)
        for handler in self.error_log.handlers:
            handler.setFormatter(SafeJsonFormatter(pid=True))

    def info(self, msg: str, *args: Any, **kwargs: Any) -> None:
        # With SO_REUSEPORT the master holds no socket (each worker opens its own), so
        # gunicorn announces "Listening at:  (pid)": name the address operators look for.
        if msg == _LISTENING and args and not args[0] and self.cfg.reuse_port:
            args = (f"{_addresses(self.cfg.address)} (one socket per worker)", *args[1:])
        super().info(msg, *args, **kwargs)


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
) -> None:
    """Serve the WSGI app that ``load`` builds (once in each worker) with ``options()``.

    Shared by ``baclofen-cds serve`` and the benchmark's bare baseline, so both run under
    exactly the same server settings.
    """
    from gunicorn.app.base import BaseApplication

    settings = {
        key: value for key, value in options(host, port, workers).items() if value is not None
    }

    class Server(BaseApplication):
        def load_config(self) -> None:
            for key, value in settings.items():
                self.cfg.set(key, value)

        def load(self) -> Any:
            return load()

    Server().run()
