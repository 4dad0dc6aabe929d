"""Load benchmark: our service against a bare Flask app, same gunicorn, same request.

Run by hand or in CI as a report (``make bench``); it asserts nothing about speed. It
starts the real server (``baclofen-cds serve``, development env, auth off) and the bare
app of ``bare_app.py`` under the same gunicorn settings on loopback, and drives them with
``wrk`` POSTing ``data/order-sign-full-prefetch.json`` (or ``--request``, to the service of
its ``hook``), one server at a time:

1. the concurrency sweep (default 1, 4, 8, 16 connections, 2 workers): throughput, p50
   and p99 latency per point, and our throughput as a share of the bare app's;
2. the scaling sweep (default 1, 2, 4 workers at 16 connections): throughput per worker.

Both servers run with ``GUNICORN_REUSE_PORT=1``, as the container image and the
Kubernetes ConfigMap do, unless the environment says otherwise: without it gunicorn can
put all 8 connections on one worker of one server and not the other, and the ratio then
compares one core with two.

Both servers of a sweep run side by side (the idle one costs nothing) and the points
alternate, ours then bare, ``--repeat`` times; the summary takes each figure's median.
On a shared machine the speed of a core drifts over minutes, and gunicorn leaves each
new set of keep-alive connections split across workers by chance (8+0 halves a 2-worker
server's throughput): alternating puts both servers under the same drift, and repeating
gives each the same spread of splits, so the ratio compares like with like.

Why ``wrk``: it is C and event-driven, so one thread keeps 16 connections busy at a few
percent of a core, leaving the 2 cores of this machine to the servers (a Python client
would spend about as much CPU per request as the bare app does and flatten the ratio).
Each point also reports wrk's own CPU use so the reader can check that claim.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import requests

from cds_hooks.discovery import SERVICES
from cds_hooks.store import upgrade_database

HERE = Path(__file__).resolve().parent
REQUEST = HERE / "data" / "order-sign-full-prefetch.json"
"""The default request; ``data/order-sign-lean-prefetch.json`` is the issue's 17 kB size."""
WRK_SCRIPT = HERE / "post.lua"
TICKS = os.sysconf("SC_CLK_TCK")
TARGET_RATIO = 0.35
TARGET_P99_MS = 50.0
"""Issue 2's targets for an order hook; issue 19's for a patient-view call about a patient
on no baclofen are 60 % and 20 ms (``--target-ratio 0.6 --target-p99 20``)."""
TARGET_CONCURRENCY = 8


def hook_path(request: Path) -> str:
    """The path of our service for the request's ``hook`` (the bare app takes any)."""
    hook = json.loads(request.read_bytes())["hook"]
    service = next(s for s in SERVICES if s.hook == hook)
    return f"/cds-services/{service.id}"


@dataclass(frozen=True)
class Point:
    server: str
    workers: int
    concurrency: int
    repeat: int
    requests: int
    seconds: float
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int
    server_cpu_us_per_request: float
    wrk_cpu_percent: float
    connections_per_worker: tuple[int, ...]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def ensure_tool(name: str) -> str:
    """The path of a Debian-packaged tool, installed with apt-get when root and missing."""
    found = shutil.which(name)
    if found:
        return found
    if os.geteuid() == 0 and shutil.which("apt-get"):
        print(f"{name} is missing: installing Debian's package with apt-get", flush=True)
        subprocess.run(["apt-get", "install", "-y", "-q", name], check=True)
        found = shutil.which(name)
    if not found:
        sys.exit(f"this benchmark needs {name}: apt-get install {name} (Debian/Ubuntu)")
    return found


def tree_cpu_seconds(pid: int) -> float:
    """User + system CPU of a process and its children (the gunicorn master and workers)."""
    total = 0.0
    pending = [pid]
    while pending:
        current = pending.pop()
        try:
            fields = Path(f"/proc/{current}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / TICKS
            for task in Path(f"/proc/{current}/task").iterdir():
                pending.extend(int(c) for c in (task / "children").read_text().split())
        except (FileNotFoundError, ProcessLookupError):
            continue
    return total


def server_command(
    kind: str, port: int, workers: int, workdir: Path
) -> tuple[list[str], dict[str, str]]:
    """The command line and environment that start ``ours`` or ``bare`` on ``port``.

    Ours runs as in production: a SQLite store in ``workdir`` (upgraded here, the step
    that precedes serving) and Prometheus metrics in multiprocess files, so their
    per-request cost is measured too.
    """
    env = {
        **os.environ,
        "GUNICORN_THREADS": os.environ.get("GUNICORN_THREADS", "4"),
        "GUNICORN_REUSE_PORT": os.environ.get("GUNICORN_REUSE_PORT", "1"),
    }
    if kind == "ours":
        metrics_dir = workdir / f"prometheus-{port}"
        database = f"sqlite:///{workdir / 'feedback.sqlite3'}"
        upgrade_database(database)
        env |= {
            "CDS_ENV": "development",
            "CDS_AUTH_MODE": "off",
            "CDS_DATABASE_URL": database,
            "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
        }
        command = [sys.executable, "-m", "cds_hooks.cli", "serve", "--port", str(port)]
    else:
        env.pop("PROMETHEUS_MULTIPROC_DIR", None)
        command = [sys.executable, str(HERE / "bare_app.py"), "--port", str(port)]
    return [*command, "--workers", str(workers)], env


@contextmanager
def server(kind: str, workers: int, workdir: Path, request: Path) -> Iterator[tuple[str, int]]:
    """Start ``ours`` or ``bare`` on a free loopback port; yield its base URL and pid."""
    port = free_port()
    command, env = server_command(kind, port, workers, workdir)
    log_path = workdir / f"{kind}-{workers}w-{port}.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_answering(base, process, log_path, request)
        yield base, process.pid
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def wait_until_answering(
    base: str, process: subprocess.Popen[bytes], log: Path, request: Path
) -> None:
    body = request.read_bytes()
    path = hook_path(request)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            sys.exit(f"server exited with {process.returncode}; log:\n{log.read_text()}")
        try:
            response = requests.post(
                base + path,
                data=body,
                headers={"Content-Type": "application/json"},
                timeout=5,
            )
        except (requests.ConnectionError, requests.Timeout):  # workers still booting
            time.sleep(0.1)
            continue
        if response.status_code != 200 or "cards" not in response.json():
            sys.exit(f"{base}{path} answered {response.status_code}: {response.text[:500]}")
        return
    sys.exit(f"server did not start; log:\n{log.read_text()}")


def run_wrk(
    wrk: str,
    url: str,
    concurrency: int,
    seconds: float,
    request: Path,
    server_pid: int | None = None,
) -> dict[str, Any]:
    """Run wrk once; with ``server_pid``, also note how its connections sit on the workers."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    process = subprocess.Popen(
        [
            wrk,
            "--threads",
            "1",
            "--connections",
            str(concurrency),
            "--duration",
            f"{seconds:g}s",
            "--timeout",
            "10s",
            "--script",
            str(WRK_SCRIPT),
            url,
        ],
        env={**os.environ, "BENCH_BODY": str(request)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    spread: list[int] = []
    if server_pid is not None:
        time.sleep(min(2.0, seconds / 2))
        spread = connections_per_worker(server_pid, urlsplit(url).port or 80)
    stdout, stderr = process.communicate()
    if process.returncode != 0:
        sys.exit(f"wrk failed ({process.returncode}): {stderr}")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    line = next(x for x in stdout.splitlines() if x.startswith("BENCH "))
    result: dict[str, Any] = json.loads(line.removeprefix("BENCH "))
    result["wrk_cpu_seconds"] = (after.ru_utime - before.ru_utime) + (
        after.ru_stime - before.ru_stime
    )
    result["connections_per_worker"] = spread
    return result


def worker_pids(master: int) -> list[int]:
    children = Path(f"/proc/{master}/task/{master}/children")
    return sorted(int(pid) for pid in children.read_text().split()) if children.exists() else []


def connections_per_worker(master: int, port: int) -> list[int]:
    """Established connections each gunicorn worker holds on ``port`` (empty without ``ss``).

    gunicorn does not balance connections: whichever worker wakes first accepts, so a few
    keep-alive clients can all land on one worker and leave the other cores idle.
    """
    if not shutil.which("ss"):
        return []
    listing = subprocess.run(
        ["ss", "-tnpH", "state", "established", f"( sport = :{port} )"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout
    return [listing.count(f"pid={pid},") for pid in worker_pids(master)]


def measure(
    wrk: str,
    kind: str,
    base: str,
    pid: int,
    workers: int,
    concurrency: int,
    seconds: float,
    repeat: int,
    request: Path,
) -> Point:
    cpu_before = tree_cpu_seconds(pid)
    raw = run_wrk(wrk, base + hook_path(request), concurrency, seconds, request, server_pid=pid)
    server_cpu = tree_cpu_seconds(pid) - cpu_before
    elapsed = raw["duration_us"] / 1e6
    count = int(raw["requests"])
    errors = sum(
        int(raw[k])
        for k in ("connect_errors", "read_errors", "write_errors", "timeouts", "bad_status")
    )
    point = Point(
        server=kind,
        workers=workers,
        concurrency=concurrency,
        repeat=repeat,
        requests=count,
        seconds=round(elapsed, 2),
        rps=round(count / elapsed, 1),
        p50_ms=round(raw["p50_us"] / 1000, 2),
        p99_ms=round(raw["p99_us"] / 1000, 2),
        errors=errors,
        server_cpu_us_per_request=round(server_cpu / max(count, 1) * 1e6),
        wrk_cpu_percent=round(100 * raw["wrk_cpu_seconds"] / elapsed, 1),
        connections_per_worker=tuple(raw["connections_per_worker"]),
    )
    spread = "+".join(map(str, point.connections_per_worker)) or "?"
    print(
        f"  {kind:<5} {workers:>2}w c={concurrency:<3} {point.rps:>8.1f} req/s  "
        f"p50 {point.p50_ms:>7.2f} ms  p99 {point.p99_ms:>7.2f} ms  "
        f"server CPU {point.server_cpu_us_per_request:>6} µs/req  "
        f"wrk CPU {point.wrk_cpu_percent:>4.1f}%  conns/worker {spread:<7} errors {errors}",
        flush=True,
    )
    return point


def sweep(
    wrk: str,
    workdir: Path,
    workers: int,
    levels: Sequence[int],
    seconds: float,
    warmup: float,
    repeats: int,
    request: Path,
) -> list[Point]:
    points = []
    with (
        server("ours", workers, workdir, request) as ours,
        server("bare", workers, workdir, request) as bare,
    ):
        servers = {"ours": ours, "bare": bare}
        for base, _ in servers.values():
            # lazy imports, caches
            run_wrk(wrk, base + hook_path(request), max(levels), warmup, request)
        for repeat in range(1, repeats + 1):
            for concurrency in levels:
                for kind, (base, pid) in servers.items():
                    points.append(
                        measure(
                            wrk, kind, base, pid, workers, concurrency, seconds, repeat, request
                        )
                    )
    return points


def median_point(points: Sequence[Point]) -> Point:
    """Each figure's median over the repeats of one server at one setting."""
    first = points[0]
    figures = {
        name: round(statistics.median(getattr(p, name) for p in points), 2)
        for name in ("rps", "p50_ms", "p99_ms", "server_cpu_us_per_request", "wrk_cpu_percent")
    }
    return replace(
        first,
        repeat=0,
        requests=sum(p.requests for p in points),
        seconds=round(sum(p.seconds for p in points), 2),
        errors=sum(p.errors for p in points),
        connections_per_worker=(),
        **figures,
    )


def medians(points: Sequence[Point]) -> list[Point]:
    groups: dict[tuple[str, int, int], list[Point]] = {}
    for point in points:
        groups.setdefault((point.server, point.workers, point.concurrency), []).append(point)
    return [median_point(group) for group in groups.values()]


def by(points: Sequence[Point], **match: object) -> Point:
    return next(p for p in points if all(getattr(p, k) == v for k, v in match.items()))


def print_ratios(points: Sequence[Point], key: str, values: Sequence[int], **fixed: int) -> None:
    for value in values:
        ours = by(points, server="ours", **{key: value}, **fixed)
        bare = by(points, server="bare", **{key: value}, **fixed)
        print(
            f"  {key}={value:<3} ours/bare throughput {ours.rps / bare.rps:6.1%}  "
            f"CPU-cost ratio {_cpu_ratio(ours, bare):6.1%}  "
            f"(ours {ours.rps:.0f}, bare {bare.rps:.0f} req/s; "
            f"p99 ours {ours.p99_ms:.1f} ms, bare {bare.p99_ms:.1f} ms)"
        )


def _cpu_ratio(ours: Point, bare: Point) -> float:
    """Bare CPU per request over ours: the throughput ratio two CPU-bound servers would show."""
    return bare.server_cpu_us_per_request / max(ours.server_cpu_us_per_request, 1)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per point")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds before each server")
    parser.add_argument("--concurrency", default="1,4,8,16", help="connections per point")
    parser.add_argument("--workers", type=int, default=2, help="workers for the sweep")
    parser.add_argument("--scaling", default="1,2,4", help="worker counts ('' to skip)")
    parser.add_argument("--scaling-concurrency", type=int, default=16)
    parser.add_argument("--repeat", type=int, default=3, help="alternating runs per point")
    parser.add_argument("--json", type=Path, help="also write every point to this file")
    parser.add_argument(
        "--request", type=Path, default=REQUEST, help="the hook request to send (JSON file)"
    )
    parser.add_argument("--target-ratio", type=float, default=TARGET_RATIO)
    parser.add_argument("--target-p99", type=float, default=TARGET_P99_MS, help="milliseconds")
    args = parser.parse_args(argv)
    request: Path = args.request
    levels = [int(x) for x in args.concurrency.split(",") if x]
    scaling = [int(x) for x in args.scaling.split(",") if x]

    wrk = ensure_tool("wrk")
    print(
        f"request: {request.name} ({request.stat().st_size} bytes), {os.cpu_count()} CPUs, "
        f"{args.duration:g} s per point × {args.repeat} alternating runs, gunicorn gthread "
        f"threads={os.environ.get('GUNICORN_THREADS', '4')} "
        f"worker_connections={os.environ.get('GUNICORN_WORKER_CONNECTIONS') or 'default'}",
        flush=True,
    )
    with tempfile.TemporaryDirectory(prefix="baclofen-bench-") as tmp:
        workdir = Path(tmp)
        print(f"\nconcurrency sweep, {args.workers} workers", flush=True)
        runs = sweep(
            wrk, workdir, args.workers, levels, args.duration, args.warmup, args.repeat, request
        )
        scaled_runs: list[Point] = []
        if scaling:
            print(f"\nscaling sweep, {args.scaling_concurrency} connections", flush=True)
            for workers in scaling:
                scaled_runs += sweep(
                    wrk,
                    workdir,
                    workers,
                    [args.scaling_concurrency],
                    args.duration,
                    args.warmup,
                    args.repeat,
                    request,
                )
    points, scaled = medians(runs), medians(scaled_runs)

    print(f"\nours/bare, {args.workers} workers, medians of {args.repeat} runs")
    print_ratios(points, "concurrency", levels, workers=args.workers)
    if scaled:
        print(f"\nscaling, {args.scaling_concurrency} connections: throughput per worker")
        for workers in scaling:
            ours = by(scaled, server="ours", workers=workers)
            bare = by(scaled, server="bare", workers=workers)
            print(
                f"  {workers}w  ours {ours.rps:7.1f} req/s = {ours.rps / workers:6.1f}/worker  "
                f"bare {bare.rps:7.1f} req/s = {bare.rps / workers:6.1f}/worker  "
                f"ratio {ours.rps / bare.rps:6.1%} (CPU-cost ratio {_cpu_ratio(ours, bare):6.1%})"
            )
    if TARGET_CONCURRENCY in levels:
        ours = by(points, server="ours", concurrency=TARGET_CONCURRENCY, workers=args.workers)
        bare = by(points, server="bare", concurrency=TARGET_CONCURRENCY, workers=args.workers)
        ratio = ours.rps / bare.rps
        print(f"\ntargets at concurrency {TARGET_CONCURRENCY} (report only, not a test):")
        met = _verdict(ratio >= args.target_ratio)
        print(
            f"  throughput >= {args.target_ratio:.0%} of bare: {ratio:.1%} {met} "
            f"(CPU-cost ratio {_cpu_ratio(ours, bare):.1%}; CPU per request "
            f"ours {ours.server_cpu_us_per_request:.0f} µs, "
            f"bare {bare.server_cpu_us_per_request:.0f} µs)"
        )
        print(
            f"  p99 < {args.target_p99:g} ms: {ours.p99_ms:.1f} ms "
            f"{_verdict(ours.p99_ms < args.target_p99)}"
        )
    if any(p.errors for p in points + scaled):
        print("\nWARNING: some requests failed (see the errors column); numbers are suspect")
    if args.json:
        every = runs + scaled_runs + points + scaled
        args.json.write_text(json.dumps([asdict(p) for p in every], indent=2) + "\n")
    return 0


def _verdict(met: bool) -> str:
    return "met" if met else "NOT met"


if __name__ == "__main__":
    sys.exit(main())
