"""Instructions per hook call, ours against the bare app: a speed measure that noise cannot move.

``python benchmarks/instructions.py [-n 100]`` runs each app in-process under valgrind's
cachegrind (no cache simulation), once with ``n`` extra requests and once without, and
prints the difference divided by ``n``: the CPU instructions one request costs, from the
WSGI call to the last byte of the answer (no HTTP, no gunicorn). The same code gives the
same count on every run, however busy the machine, so it shows what a change does where
``load.py``'s timings drift by tens of per cent on a shared machine. It is a proxy: time
also depends on cache misses, which a count does not see, and which cost our larger
working set more than the bare app's (``load.py`` measures the real thing).

Needs Debian's ``valgrind`` (installed with apt-get when run as root and missing). Takes
about a minute and a half.
"""

from __future__ import annotations

import argparse
import io
import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from load import ensure_tool

HERE = Path(__file__).resolve().parent
REQUEST = HERE / "data" / "order-sign-full-prefetch.json"
WARM_UP = 30
_REFS = re.compile(r"I\s+refs:\s+([\d,]+)")


def count(valgrind: str, kind: str, requests: int) -> int:
    """Instructions of a whole process that builds ``kind`` and answers ``requests`` calls."""
    with tempfile.TemporaryDirectory(prefix="baclofen-instructions-") as tmp:
        env = {
            **os.environ,
            "PYTHONHASHSEED": "0",
            "CDS_ENV": "development",
            "CDS_AUTH_MODE": "off",
            "CDS_DATABASE_URL": f"sqlite:///{tmp}/feedback.sqlite3",
        }
        env.pop("PROMETHEUS_MULTIPROC_DIR", None)
        result = subprocess.run(
            [
                valgrind,
                "--tool=cachegrind",
                "--cache-sim=no",
                f"--cachegrind-out-file={tmp}/cachegrind.out",
                sys.executable,
                __file__,
                "--serve",
                kind,
                str(requests),
            ],
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
    found = _REFS.search(result.stderr)
    if result.returncode != 0 or found is None:
        sys.exit(f"{kind} under valgrind failed ({result.returncode}):\n{result.stderr[-2000:]}")
    return int(found.group(1).replace(",", ""))


def serve(kind: str, requests: int) -> None:
    """Build ``kind``, warm it up, then answer ``requests`` calls (run under valgrind)."""
    body = REQUEST.read_bytes()
    if kind == "bare":
        sys.path.insert(0, str(HERE))
        from bare_app import create_app

        app: Any = create_app()
        path = "/cds-services/baclofen-order-sign"
    else:
        from cds_hooks.cli import _worker_app

        app = _worker_app()
        path = "/cds-services/baclofen-order-sign"
    call = _caller(app, path, body)
    for _ in range(WARM_UP + requests):
        call()


def _caller(app: Any, path: str, body: bytes) -> Callable[[], None]:
    def call() -> None:
        statuses: list[str] = []
        environ = {
            "REQUEST_METHOD": "POST",
            "PATH_INFO": path,
            "SCRIPT_NAME": "",
            "QUERY_STRING": "",
            "SERVER_NAME": "127.0.0.1",
            "SERVER_PORT": "8080",
            "SERVER_PROTOCOL": "HTTP/1.1",
            "REMOTE_ADDR": "127.0.0.1",
            "HTTP_HOST": "127.0.0.1:8080",
            "CONTENT_TYPE": "application/json",
            "CONTENT_LENGTH": str(len(body)),
            "wsgi.input": io.BytesIO(body),
            "wsgi.errors": sys.stderr,
            "wsgi.url_scheme": "http",
            "wsgi.multithread": True,
            "wsgi.multiprocess": True,
            "wsgi.run_once": False,
        }
        answer = app(environ, lambda status, headers, exc_info=None: statuses.append(status))
        b"".join(answer)
        getattr(answer, "close", lambda: None)()
        if not statuses[0].startswith("200"):
            raise SystemExit(f"{path} answered {statuses[0]}")

    return call


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", type=int, default=100, help="requests counted per app")
    parser.add_argument("--serve", nargs=2, metavar=("KIND", "N"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve[0], int(args.serve[1]))
        return 0
    valgrind = ensure_tool("valgrind")
    per_request = {}
    for kind in ("ours", "bare"):
        per_request[kind] = (count(valgrind, kind, args.n) - count(valgrind, kind, 0)) / args.n
        print(f"{kind:<5} {per_request[kind] / 1e6:6.2f} M instructions per request", flush=True)
    print(f"bare/ours {per_request['bare'] / per_request['ours']:.1%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
