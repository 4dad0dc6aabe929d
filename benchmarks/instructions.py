"""Instructions per hook call, ours against the bare app: a speed measure that noise cannot move.

``python benchmarks/instructions.py [-n 100]`` runs each app in-process under valgrind's
cachegrind (no cache simulation), once with ``n`` extra requests and once without, and
prints the difference divided by ``n``: the CPU instructions one request costs, from the
WSGI call to the last byte of the answer (no HTTP, no gunicorn). The same code gives the
same count on every run, however busy the machine, so it shows what a change does where
``load.py``'s timings drift by tens of per cent on a shared machine. It is a proxy: time
also depends on cache misses, which a count does not see, and which cost our larger
working set more than the bare app's (``load.py`` measures the real thing).

``--served`` counts the same request through the real server instead, started as
``load.py`` starts it (gunicorn with ``cds_hooks.gunicorn_conf`` settings, one gthread
worker, ours with ``PROMETHEUS_MULTIPROC_DIR`` set) and called over HTTP on 127.0.0.1 on
one keep-alive connection: the count adds HTTP parsing, gunicorn's worker loop, socket
I/O and, for ours, metrics kept in the multiprocess files rather than in memory (the
request log line is written in both modes), so it is the noise-free figure nearest to
``load.py``'s target. It sums the counts of the master and the worker
(valgrind follows the fork), and stops the server with SIGTERM so the worker writes its
count. gunicorn's loops also wake on timers, so this count can move by ~0.01 M per request.

Needs Debian's ``valgrind`` (installed with apt-get when run as root and missing). Either
mode takes about a minute and a half.
"""

from __future__ import annotations

import argparse
import io
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from http.client import HTTPConnection, HTTPException
from pathlib import Path
from typing import Any, NoReturn

from load import HERE, REQUEST, ensure_tool, free_port, hook_path, server_command

from cds_hooks.store import upgrade_database

WARM_UP = 30
SERVED_WARM_UP = 10
START_SECONDS = 300  # valgrind needs tens of seconds to boot Python, the app and a worker
STOP_SECONDS = 300
_REFS = re.compile(r"I\s+refs:\s+([\d,]+)")
_SUMMARY = re.compile(r"^summary:\s+(\d+)", re.MULTILINE)


def count(valgrind: str, kind: str, requests: int, request: Path) -> int:
    """Instructions of a whole process that builds ``kind`` and answers ``requests`` calls."""
    with tempfile.TemporaryDirectory(prefix="baclofen-instructions-") as tmp:
        database = f"sqlite:///{tmp}/feedback.sqlite3"
        upgrade_database(database)
        env = {
            **os.environ,
            "PYTHONHASHSEED": "0",
            "CDS_ENV": "development",
            "CDS_AUTH_MODE": "off",
            "CDS_DATABASE_URL": database,
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
                str(request),
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


def serve(kind: str, requests: int, request: Path) -> None:
    """Build ``kind``, warm it up, then answer ``requests`` calls (run under valgrind)."""
    body = request.read_bytes()
    if kind == "bare":
        sys.path.insert(0, str(HERE))
        from bare_app import create_app

        app: Any = create_app()
    else:
        from cds_hooks.cli import _worker_app

        app = _worker_app()
    call = _caller(app, hook_path(request), body)
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


def served_count(valgrind: str, kind: str, requests: int, request: Path) -> int:
    """Instructions of the gunicorn master and worker of ``kind`` answering ``requests`` calls.

    The workers are forked, not exec'd, so valgrind follows them and each process writes
    its own ``cg.<pid>`` when it exits; the sum of all of them is the server's count.
    """
    with tempfile.TemporaryDirectory(prefix="baclofen-instructions-") as name:
        tmp = Path(name)
        port = free_port()
        command, env = _served_command(kind, port, tmp)
        log_path = tmp / "server.log"
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                [
                    valgrind,
                    "--tool=cachegrind",
                    "--cache-sim=no",
                    f"--cachegrind-out-file={tmp}/cg.%p",
                    *command,
                ],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: a kill reaches the worker
            )
        try:
            _drive(port, process, log_path, requests, request)
        finally:
            stopped = _stop(process)
        if not stopped or process.returncode != 0:
            _exit_with_log(f"{kind} did not stop cleanly ({process.returncode})", log_path)
        totals = [_summary(path, log_path) for path in sorted(tmp.glob("cg.*"))]
        if len(totals) < 2:
            _exit_with_log(f"{kind}: expected master and worker counts, got {totals}", log_path)
        return sum(totals)


def _served_command(kind: str, port: int, tmp: Path) -> tuple[list[str], dict[str, str]]:
    """``load.server_command`` for one worker, fit for valgrind.

    The long gunicorn timeouts keep the master from killing a worker whose heartbeat
    valgrind delays, or one still exiting (killed, it would write no count).
    """
    command, env = server_command(kind, port, 1, tmp)
    env |= {"PYTHONHASHSEED": "0", "GUNICORN_TIMEOUT": "600", "GUNICORN_GRACEFUL_TIMEOUT": "120"}
    return command, env


def _drive(
    port: int, process: subprocess.Popen[bytes], log: Path, requests: int, request: Path
) -> None:
    """Wait for the first 200, then send the warm-up and ``requests`` calls on one connection.

    Only a refused connection is retried: a call that reached the server unanswered would
    be counted twice.
    """
    body = request.read_bytes()
    path = hook_path(request)
    deadline = time.monotonic() + START_SECONDS
    while True:
        if process.poll() is not None:
            _exit_with_log(f"server exited with {process.returncode}", log)
        if time.monotonic() > deadline:
            _exit_with_log(f"server did not answer within {START_SECONDS} s", log)
        connection = HTTPConnection("127.0.0.1", port, timeout=START_SECONDS)
        try:
            _post(connection, path, body, log)
            break
        except ConnectionRefusedError:
            connection.close()
            time.sleep(0.5)
        except (OSError, HTTPException) as exc:
            _exit_with_log(f"first call failed: {exc!r}", log)
    try:
        for _ in range(SERVED_WARM_UP + requests):
            _post(connection, path, body, log)
    except (OSError, HTTPException) as exc:
        _exit_with_log(f"call failed: {exc!r}", log)
    finally:
        connection.close()


def _post(connection: HTTPConnection, path: str, body: bytes, log: Path) -> None:
    connection.request("POST", path, body, {"Content-Type": "application/json"})
    response = connection.getresponse()
    answer = response.read()
    if response.status != 200:
        _exit_with_log(f"{path} answered {response.status}: {answer[:500]!r}", log)


def _stop(process: subprocess.Popen[bytes]) -> bool:
    """SIGTERM, so the worker exits and writes its count; kill if it hangs. True if clean."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=STOP_SECONDS)
        return True
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        return False


def _summary(path: Path, log: Path) -> int:
    found = _SUMMARY.search(path.read_text())
    if found is None:
        _exit_with_log(f"{path.name} has no summary (process killed?)", log)
    return int(found.group(1))


def _exit_with_log(message: str, log: Path) -> NoReturn:
    sys.exit(f"{message}; server log ends:\n{log.read_text(errors='replace')[-3000:]}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", type=int, default=100, help="requests counted per app")
    parser.add_argument(
        "--served", action="store_true", help="count through gunicorn and HTTP, as load.py runs it"
    )
    parser.add_argument(
        "--request", type=Path, default=REQUEST, help="the hook request to send (JSON file)"
    )
    parser.add_argument(
        "--serve", nargs=3, metavar=("KIND", "N", "REQUEST"), help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    if args.serve:
        serve(args.serve[0], int(args.serve[1]), Path(args.serve[2]))
        return 0
    valgrind = ensure_tool("valgrind")
    counter, suffix = (served_count, " (served)") if args.served else (count, "")
    per_request = {}
    for kind in ("ours", "bare"):
        total = counter(valgrind, kind, args.n, args.request) - counter(
            valgrind, kind, 0, args.request
        )
        per_request[kind] = total / args.n
        print(
            f"{kind:<5} {per_request[kind] / 1e6:6.2f} M instructions per request{suffix}",
            flush=True,
        )
    print(f"bare/ours {per_request['bare'] / per_request['ours']:.1%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
