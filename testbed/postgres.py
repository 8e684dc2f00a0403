"""The test bed's PostgreSQL: a throwaway cluster with a seeded ``shop`` database.

Called by the orchestrator (``testbed.bed``) and by the e2e fixture
``tests/e2e/conftest_postgres.py`` through ``start``/``stop``; e2e tests also call
``run_slow_query`` and ``inject_conversion_drop``.

``start(workdir)`` runs Debian's PostgreSQL 15 binaries (``initdb``, ``pg_ctl``) as an
unprivileged OS user (``postgres`` when we are root: the server refuses to run as
root), with ``pg_stat_statements`` preloaded (``track = all``), listening on
127.0.0.1 at a free port and on a unix socket next to the data directory. It creates
the ``shop`` database, seeds it (``testbed.business_data``), resets the statement
statistics so the seeding's own slow statements do not show up, and creates the
read-only role ``postdeploy_ro``:

- ``LOGIN`` with a random password, ``default_transaction_read_only = on``;
- ``CONNECT`` on ``shop`` (and no ``TEMPORARY``), ``SELECT`` on the tables of
  ``public`` and nothing else, so writes fail even after it turns read-only off;
- member of ``pg_read_all_stats``, so it sees every statement in
  ``pg_stat_statements``.

The returned state holds pids, ports, directories and ``env``: ``POSTGRES_DSN`` (the
read-only role) and ``POSTGRES_ADMIN_DSN`` (the superuser), both on 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import os
import pathlib
import secrets
import shutil
import subprocess
import tempfile
import time
from typing import Any

import psycopg
from psycopg import sql

from testbed import business_data, ports, processes

__all__ = [
    "BIN_DIR",
    "DATABASE",
    "READ_ONLY_ROLE",
    "SLOW_QUERY_MARKER",
    "inject_conversion_drop",
    "run_slow_query",
    "server_pids",
    "start",
    "stop",
]

BIN_DIR = pathlib.Path(os.environ.get("POSTDEPLOY_PG_BIN", "/usr/lib/postgresql/15/bin"))
DATABASE = "shop"
READ_ONLY_ROLE = "postdeploy_ro"
ADMIN_ROLE = "postgres"
SLOW_QUERY_MARKER = "postdeploy-testbed:slow-query"
HOST = ports.LOOPBACK

_OS_USER = os.environ.get("POSTDEPLOY_PG_OS_USER", "postgres")  # used only when root
_SOCKET_PATH_MAX = 100  # sun_path is 108 bytes, minus "/.s.PGSQL.NNNNN"
_START_ATTEMPTS = 3

_SERVER_SETTINGS = """
# --- postdeploy test bed ---
listen_addresses = '127.0.0.1'
unix_socket_directories = '{socket_dir}'
shared_preload_libraries = 'pg_stat_statements'
pg_stat_statements.track = all
max_connections = 50
timezone = 'UTC'
log_timezone = 'UTC'
# A throwaway cluster: durability buys nothing here and slows the seeding.
fsync = off
synchronous_commit = off
full_page_writes = off
"""

inject_conversion_drop = business_data.inject_conversion_drop


def start(workdir: pathlib.Path, *, seed: bool = True) -> dict[str, Any]:
    """Start, seed and open the cluster; return its state (JSON-ready).

    ``seed=False`` leaves ``shop`` empty (but still creates the roles): for tests of
    the server's life cycle only.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    base_dir = _make_base_dir(workdir)
    state: dict[str, Any] = {
        "component": "postgres",
        "host": HOST,
        "workdir": str(workdir),
        "base_dir": str(base_dir),
        "data_dir": str(base_dir / "data"),
        "socket_dir": str(base_dir / "socket"),
        "log_file": str(base_dir / "postgres.log"),
        "os_user": _OS_USER if os.geteuid() == 0 else None,
        "database": DATABASE,
    }
    try:
        admin_password = secrets.token_urlsafe(24)
        _initdb(state, admin_password)
        _start_server(state)
        admin_dsn = _dsn(ADMIN_ROLE, admin_password, state["port"], DATABASE)
        with psycopg.connect(
            _dsn(ADMIN_ROLE, admin_password, state["port"], "postgres"), autocommit=True
        ) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(DATABASE)))
        with psycopg.connect(admin_dsn, autocommit=True) as conn:
            conn.execute("CREATE EXTENSION pg_stat_statements")
        state["seed"] = business_data.seed(admin_dsn) if seed else None
        ro_password = secrets.token_urlsafe(24)
        _create_read_only_role(admin_dsn, ro_password)
        with psycopg.connect(admin_dsn, autocommit=True) as conn:
            conn.execute("SELECT pg_stat_statements_reset()")
    except BaseException:
        stop(state)
        raise
    state["read_only_role"] = READ_ONLY_ROLE
    state["read_only_password"] = ro_password
    state["admin_role"] = ADMIN_ROLE
    state["admin_password"] = admin_password
    state["env"] = {
        "POSTGRES_DSN": _dsn(READ_ONLY_ROLE, ro_password, state["port"], DATABASE),
        "POSTGRES_ADMIN_DSN": admin_dsn,
    }
    return state


def stop(state: dict[str, Any]) -> None:
    """Stop the server (fast shutdown, then SIGKILL) and remove its directories.

    Safe on a partial state (a failed ``start``) and when called twice. The server
    log survives as ``<workdir>/postgres.log``.
    """
    data_dir = pathlib.Path(state["data_dir"])
    pid = state.get("pid")
    if (data_dir / "PG_VERSION").exists():
        with contextlib.suppress(subprocess.SubprocessError, OSError):
            _run(
                state,
                [
                    str(BIN_DIR / "pg_ctl"),
                    "-D",
                    str(data_dir),
                    "-m",
                    "fast",
                    "-w",
                    "-t",
                    "30",
                    "stop",
                ],
                timeout=40,
            )
    if isinstance(pid, int):
        processes.kill_tree(pid)
    base_dir = pathlib.Path(state["base_dir"])
    log_file = pathlib.Path(state["log_file"])
    keep_log = pathlib.Path(state["workdir"]) / "postgres.log"
    if log_file.exists() and log_file != keep_log:
        with contextlib.suppress(OSError):
            shutil.copyfile(log_file, keep_log)
    shutil.rmtree(base_dir, ignore_errors=True)


def run_slow_query(admin_dsn: str, seconds: float) -> float:
    """Run one deliberately slow statement (tagged with ``SLOW_QUERY_MARKER``).

    ``pg_stat_statements`` records it with ``mean_exec_time`` of about ``seconds``
    (in milliseconds there). Returns the wall-clock seconds it took.
    """
    query = sql.SQL("SELECT /* {marker} */ pg_sleep(%s), count(*) FROM orders").format(
        marker=sql.SQL(SLOW_QUERY_MARKER)
    )
    began = time.monotonic()
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute(query, (seconds,))
    return time.monotonic() - began


def server_pids(state: dict[str, Any]) -> list[int]:
    """The live postmaster of ``state`` and all its descendants (backends, workers)."""
    pid = state.get("pid")
    return processes.tree(pid) if isinstance(pid, int) else []


def _make_base_dir(workdir: pathlib.Path) -> pathlib.Path:
    """``<workdir>/postgres``, or a fresh dir in /tmp when the OS user cannot reach it.

    pytest's ``tmp_path`` lives under a root-only directory, and unix socket paths
    must stay short; both force the fallback.
    """
    base_dir = workdir / "postgres"
    if len(str(base_dir / "socket")) <= _SOCKET_PATH_MAX:
        shutil.rmtree(base_dir, ignore_errors=True)
        base_dir.mkdir()
        if _usable_by_os_user(base_dir):
            return base_dir
        base_dir.rmdir()
    base_dir = pathlib.Path(tempfile.mkdtemp(prefix="postdeploy-pg-"))
    if _usable_by_os_user(base_dir):
        return base_dir
    raise RuntimeError(f"OS user {_OS_USER!r} cannot use {base_dir}")


def _usable_by_os_user(path: pathlib.Path) -> bool:
    if os.geteuid() != 0:
        return True
    shutil.chown(path, user=_OS_USER, group=None)
    path.chmod(0o700)
    probe = subprocess.run(
        ["runuser", "-u", _OS_USER, "--", "test", "-w", str(path), "-a", "-x", str(path)],
        check=False,
    )
    return probe.returncode == 0


def _initdb(state: dict[str, Any], admin_password: str) -> None:
    base_dir = pathlib.Path(state["base_dir"])
    socket_dir = pathlib.Path(state["socket_dir"])
    pwfile = base_dir / "pwfile"
    pwfile.write_text(admin_password + "\n")
    pwfile.chmod(0o600)
    socket_dir.mkdir(mode=0o700)
    if state["os_user"] is not None:
        shutil.chown(pwfile, user=_OS_USER, group=None)
        shutil.chown(socket_dir, user=_OS_USER, group=None)
    try:
        _run(
            state,
            [
                str(BIN_DIR / "initdb"),
                "-D",
                state["data_dir"],
                "-U",
                ADMIN_ROLE,
                "--auth=scram-sha-256",
                f"--pwfile={pwfile}",
                "-E",
                "UTF8",
                "--locale=C.UTF-8",
                "--no-instructions",
            ],
            timeout=120,
        )
    finally:
        pwfile.unlink()
    conf = pathlib.Path(state["data_dir"]) / "postgresql.conf"
    with conf.open("a") as handle:
        handle.write(_SERVER_SETTINGS.format(socket_dir=socket_dir))


def _start_server(state: dict[str, Any]) -> None:
    """``pg_ctl start`` on a free port; another port if one was taken meanwhile."""
    for attempt in range(_START_ATTEMPTS):
        port = ports.free_port()
        try:
            _run(
                state,
                [
                    str(BIN_DIR / "pg_ctl"),
                    "-D",
                    state["data_dir"],
                    "-l",
                    state["log_file"],
                    "-o",
                    f"-p {port}",
                    "-w",
                    "-t",
                    "60",
                    "start",
                ],
                timeout=90,
            )
        except subprocess.CalledProcessError:
            if attempt + 1 == _START_ATTEMPTS:
                raise
            continue
        state["port"] = port
        pid_file = pathlib.Path(state["data_dir"]) / "postmaster.pid"
        state["pid"] = int(pid_file.read_text().splitlines()[0])
        return


def _create_read_only_role(admin_dsn: str, password: str) -> None:
    role = sql.Identifier(READ_ONLY_ROLE)
    database = sql.Identifier(DATABASE)
    statements: list[sql.SQL | sql.Composed] = [
        sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(role, sql.Literal(password)),
        sql.SQL("ALTER ROLE {} SET default_transaction_read_only = on").format(role),
        sql.SQL("REVOKE ALL ON DATABASE {} FROM PUBLIC").format(database),
        sql.SQL("GRANT CONNECT ON DATABASE {} TO {}").format(database, role),
        sql.SQL("REVOKE CREATE ON SCHEMA public FROM PUBLIC"),
        sql.SQL("GRANT USAGE ON SCHEMA public TO {}").format(role),
        sql.SQL("GRANT SELECT ON ALL TABLES IN SCHEMA public TO {}").format(role),
        sql.SQL("ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT ON TABLES TO {}").format(role),
        sql.SQL("GRANT pg_read_all_stats TO {}").format(role),
    ]
    with psycopg.connect(admin_dsn) as conn:
        for statement in statements:
            conn.execute(statement)


def _dsn(user: str, password: str, port: int, database: str) -> str:
    return f"postgresql://{user}:{password}@{HOST}:{port}/{database}"


def _run(state: dict[str, Any], argv: list[str], *, timeout: float) -> None:
    """Run a server binary as the unprivileged OS user; raise with its output on error."""
    if state["os_user"] is not None:
        argv = ["runuser", "-u", state["os_user"], "--", *argv]
    result = subprocess.run(
        argv,
        cwd=state["base_dir"],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if result.returncode != 0:
        raise subprocess.CalledProcessError(
            result.returncode, argv, output=result.stdout, stderr=result.stderr
        )


