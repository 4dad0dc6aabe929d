"""A throw-away PostgreSQL server for the tests that need one, as several app instances
share it in production (a pytest plugin: tests/conftest.py loads it).

The server is started by pytest-postgresql's executor from Debian's binaries
(/usr/lib/postgresql/*/bin, installed by ``make system-deps``). PostgreSQL refuses to
run as root, so under root (CI containers) pg_ctl runs as the ``postgres`` account.
Without the binaries the tests that need it skip and say why.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import port_for
import psycopg
import pytest
from pytest_postgresql.executors import PostgreSQLExecutor
from pytest_postgresql.janitor import DatabaseJanitor


def _pg_ctl() -> str | None:
    def version(path: str) -> tuple[int, ...]:
        name = Path(path).parents[1].name
        return tuple(int(part) for part in name.split(".") if part.isdigit())

    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), key=version)
    return found[-1] if found else shutil.which("pg_ctl")


def _as_postgres_user(pg_ctl: str, workdir: Path) -> str:
    """A pg_ctl stand-in that drops root to the ``postgres`` account (initdb refuses root)."""
    wrapper = workdir / "pg_ctl"
    wrapper.write_text(f'#!/bin/sh\ncd /\nexec runuser -u postgres -- "{pg_ctl}" "$@"\n')
    wrapper.chmod(0o700)
    return str(wrapper)


class _AcceptingPostgreSQLExecutor(PostgreSQLExecutor):
    """Started only once the server accepts connections. pytest-postgresql (through
    mirakuru's TCPExecutor) counts it started as soon as its port opens, while it still
    answers "the database system is starting up": a test that restarts the server and
    then expects the service to reach it raced that window."""

    def after_start_check(self) -> bool:
        try:
            with psycopg.connect(
                host=self.host,
                port=self.port,
                user=self.user,
                dbname=self.maintenance_dbname,
                connect_timeout=1,
            ):
                return True
        except psycopg.OperationalError:
            return False


@pytest.fixture(scope="module")
def postgresql_server() -> Iterator[PostgreSQLExecutor]:
    pg_ctl = _pg_ctl()
    if pg_ctl is None:
        pytest.skip(
            "PostgreSQL server binaries not found: run `make system-deps` as root "
            "or install Debian's postgresql package"
        )
    workdir = Path(tempfile.mkdtemp(prefix="baclofen-pg-ctl-"))
    cluster = Path(tempfile.mkdtemp(prefix="baclofen-pg-"))
    executable = pg_ctl
    if os.geteuid() == 0:
        executable = _as_postgres_user(pg_ctl, workdir)
        account = pwd.getpwnam("postgres")
        os.chown(cluster, account.pw_uid, account.pw_gid)
    executor = _AcceptingPostgreSQLExecutor(
        executable=executable,
        host="127.0.0.1",
        port=port_for.select_random(),
        datadir=str(cluster / "data"),
        unixsocketdir=str(cluster),
        logfile=str(cluster / "postgresql.log"),
        startparams="-w",
        dbname="baclofen_test",
        user="postgres",
    )
    executor.start()
    try:
        yield executor
    finally:
        executor.stop()
        shutil.rmtree(cluster, ignore_errors=True)
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture
def database_url(postgresql_server: PostgreSQLExecutor) -> Iterator[str]:
    """A fresh, empty database per test (created and dropped by pytest-postgresql)."""
    dbname = f"baclofen_{uuid.uuid4().hex[:12]}"
    janitor = DatabaseJanitor(
        user=postgresql_server.user,
        host=postgresql_server.host,
        port=postgresql_server.port,
        dbname=dbname,
    )
    with janitor:
        yield f"postgresql://{postgresql_server.user}@{postgresql_server.host}:{postgresql_server.port}/{dbname}"
