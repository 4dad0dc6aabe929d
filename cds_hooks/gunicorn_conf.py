"""Gunicorn settings for ``baclofen-cds serve`` and the container, from the environment.

``WEB_CONCURRENCY`` (workers) and ``GUNICORN_THREADS`` follow the usual conventions so
platform defaults apply; SIGTERM gets ``graceful_timeout`` seconds to finish requests.
"""

from __future__ import annotations

import os


def _int(name: str, default: int) -> int:
    value = os.environ.get(name, "")
    return int(value) if value.strip() else default


def options(host: str | None = None, port: int | None = None, workers: int | None = None) -> dict[str, object]:
    bind_host = host or os.environ.get("CDS_HOST", "127.0.0.1")
    bind_port = port or _int("CDS_PORT", 8080)
    return {
        "bind": f"{bind_host}:{bind_port}",
        "workers": workers or _int("WEB_CONCURRENCY", 2),
        "threads": _int("GUNICORN_THREADS", 4),
        "worker_class": "gthread",
        "timeout": _int("GUNICORN_TIMEOUT", 30),
        "graceful_timeout": _int("GUNICORN_GRACEFUL_TIMEOUT", 20),
        "keepalive": 5,
        "accesslog": None,
        "errorlog": "-",
        "loglevel": os.environ.get("CDS_LOG_LEVEL", "info").lower(),
        "worker_tmp_dir": os.environ.get("GUNICORN_WORKER_TMP_DIR") or None,
    }
