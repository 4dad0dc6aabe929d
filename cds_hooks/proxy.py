"""``baclofen-cds proxy``: nginx in front of ``baclofen-cds serve``, as production runs it.

gunicorn is not exposed: in a pod it listens on loopback (``CDS_HOST=127.0.0.1``,
``CDS_PORT``) and this proxy, in a second container of the same image, listens on
``CDS_PROXY_HOST``:``CDS_PROXY_PORT`` and forwards complete requests to it. Why a
buffering proxy, and its settings, are in ``nginx.conf`` beside this module.

The configuration is rendered into a runtime directory under the temporary directory
(``/tmp`` is writable in the container; the root filesystem is not), then nginx replaces
this process, so it is PID 1 of its container and receives the stop signal itself.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from cds_hooks.config import ConfigError, settings_from_environment

TEMPLATE = Path(__file__).with_name("nginx.conf")
NGINX_FALLBACK = "/usr/sbin/nginx"


@dataclass(frozen=True, slots=True)
class ProxySettings:
    listen_host: str
    listen_port: int
    upstream_port: int
    max_body_bytes: int


def _port(name: str, default: int) -> int:
    raw = os.environ.get(name, "").strip()
    try:
        port = int(raw) if raw else default
    except ValueError:
        raise ConfigError(f"{name} must be a port number, got {raw!r}.") from None
    if not 0 < port < 65536:
        raise ConfigError(f"{name} must be a port number, got {port}.")
    return port


def settings_from_env() -> ProxySettings:
    settings = ProxySettings(
        listen_host=os.environ.get("CDS_PROXY_HOST", "").strip() or "0.0.0.0",
        listen_port=_port("CDS_PROXY_PORT", 8080),
        upstream_port=_port("CDS_PORT", 8080),
        max_body_bytes=settings_from_environment().max_body_bytes,
    )
    if settings.listen_port == settings.upstream_port:
        raise ConfigError(
            f"CDS_PROXY_PORT and CDS_PORT are both {settings.listen_port}: the proxy listens "
            "on one and forwards to gunicorn on the other."
        )
    return settings


def render(settings: ProxySettings, runtime_dir: Path) -> str:
    host = settings.listen_host
    listen = f"[{host}]:{settings.listen_port}" if ":" in host else f"{host}:{settings.listen_port}"
    values = {
        "@RUNTIME_DIR@": str(runtime_dir),
        "@LISTEN@": listen,
        "@UPSTREAM_PORT@": str(settings.upstream_port),
        "@MAX_BODY_BYTES@": str(settings.max_body_bytes),
    }
    text = TEMPLATE.read_text(encoding="utf-8")
    for placeholder, value in values.items():
        text = text.replace(placeholder, value)
    return text


def run() -> None:
    """Render the configuration and exec nginx on it (never returns)."""
    settings = settings_from_env()
    nginx = shutil.which("nginx") or NGINX_FALLBACK
    if not os.access(nginx, os.X_OK):
        raise ConfigError("nginx is not installed (Debian package nginx): the proxy needs it.")
    runtime_dir = Path(tempfile.gettempdir()) / f"baclofen-cds-nginx-{settings.listen_port}"
    runtime_dir.mkdir(mode=0o755, exist_ok=True)
    config = runtime_dir / "nginx.conf"
    config.write_text(render(settings, runtime_dir), encoding="utf-8")
    # -e: nginx opens its compiled-in error log before reading the configuration; that
    # path is not writable here.
    os.execv(nginx, [nginx, "-e", "stderr", "-c", str(config)])
