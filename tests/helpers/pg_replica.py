"""A private PostgreSQL primary and its streaming replica on loopback ports, started and removed by a test.

``initdb`` a primary in a fresh folder, ``pg_basebackup -R`` a replica from it, start both
(PostgreSQL's own streaming replication; nothing here copies data). initdb refuses root, so as
root every PostgreSQL program runs as the ``postgres`` user (``runuser``) in folders it owns.
Both servers are stopped (immediate) and the folder removed on exit, whatever happened.
"""
from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from sqlalchemy import text

from data.db import make_engine

from .servers import free_port
from .services import service_missing


def postgres_bin() -> Path:
    """The newest installed PostgreSQL's programs (Debian: /usr/lib/postgresql/<version>/bin)."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    if initdb is None:
        service_missing("PostgreSQL's server programs (initdb, pg_ctl, pg_basebackup) are not installed")
    return Path(initdb).parent


@dataclass
class PgServer:
    name: str
    data: Path
    port: int

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"


@dataclass
class Replicated:
    primary: PgServer
    replica: PgServer
    folder: Path

    def pause_replay(self) -> None:
        self._on_replica("SELECT pg_wal_replay_pause()")

    def resume_replay(self) -> None:
        self._on_replica("SELECT pg_wal_replay_resume()")

    def _on_replica(self, sql: str) -> None:
        engine = make_engine(self.replica.url(), poolclass=None)
        try:
            with engine.connect() as connection:
                connection.execute(text(sql))
        finally:
            engine.dispose()

    def wait_replayed(self, timeout: float = 30) -> None:
        """Until the replica has replayed everything the primary has flushed now."""
        primary = make_engine(self.primary.url(), poolclass=None)
        replica = make_engine(self.replica.url(), poolclass=None)
        try:
            with primary.connect() as connection:
                target = connection.execute(text("SELECT pg_current_wal_flush_lsn()::text")).scalar_one()
            deadline = time.monotonic() + timeout
            with replica.connect() as connection:
                while not connection.execute(text("SELECT pg_last_wal_replay_lsn() >= CAST(:t AS pg_lsn)"),
                                             {"t": target}).scalar():
                    if time.monotonic() > deadline:
                        raise AssertionError(f"the replica did not replay up to {target} in {timeout:.0f} s")
                    connection.rollback()
                    time.sleep(0.05)
        finally:
            primary.dispose()
            replica.dispose()


def _as_postgres(command: list[str], **kwargs) -> subprocess.CompletedProcess:
    if os.geteuid() == 0:
        command = ["runuser", "-u", "postgres", "--", *command]
    return subprocess.run(command, capture_output=True, text=True, timeout=kwargs.pop("timeout", 120), **kwargs)


def _checked(result: subprocess.CompletedProcess, what: str) -> None:
    assert result.returncode == 0, f"{what} failed:\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}"


def _start(bin_dir: Path, server: PgServer, folder: Path) -> None:
    options = (f"-p {server.port} -c listen_addresses=127.0.0.1 -k {folder} -c fsync=off "
               "-c synchronous_commit=on -c shared_buffers=16MB -c max_connections=80 -c hot_standby=on")
    _checked(_as_postgres([str(bin_dir / "pg_ctl"), "-D", str(server.data), "-l", str(folder / f"{server.name}.log"),
                           "-o", options, "-w", "-t", "60", "start"]), f"starting the {server.name}")


@contextlib.contextmanager
def primary_and_replica() -> Iterator[Replicated]:
    """A new primary (trust auth on 127.0.0.1) and a hot-standby streaming replica of it."""
    bin_dir = postgres_bin()
    if os.geteuid() == 0:
        try:
            owner = pwd.getpwnam("postgres")
        except KeyError:
            service_missing("running as root without a 'postgres' user to run initdb as")
    # Under /tmp, not pytest's tmp_path: the postgres user must be able to reach it.
    folder = Path(tempfile.mkdtemp(prefix="opsdash-replica-"))
    if os.geteuid() == 0:
        os.chown(folder, owner.pw_uid, owner.pw_gid)
    primary = PgServer("primary", folder / "primary", free_port())
    replica = PgServer("replica", folder / "replica", free_port())
    started: list[PgServer] = []
    try:
        _checked(_as_postgres([str(bin_dir / "initdb"), "-D", str(primary.data), "-U", "postgres", "--auth=trust",
                               "-E", "UTF8", "--no-sync"]), "initdb")
        _start(bin_dir, primary, folder)
        started.append(primary)
        _checked(_as_postgres([str(bin_dir / "pg_basebackup"), "-h", "127.0.0.1", "-p", str(primary.port),
                               "-U", "postgres", "-D", str(replica.data), "-R", "-X", "stream", "-c", "fast",
                               "--no-sync"]), "pg_basebackup")
        _start(bin_dir, replica, folder)
        started.append(replica)
        engine = make_engine(replica.url(), poolclass=None)
        try:
            with engine.connect() as connection:
                assert connection.execute(text("SELECT pg_is_in_recovery()")).scalar() is True
        finally:
            engine.dispose()
        yield Replicated(primary, replica, folder)
    finally:
        for server in reversed(started):
            _as_postgres([str(bin_dir / "pg_ctl"), "-D", str(server.data), "-m", "immediate", "-w", "stop"], timeout=60)
        shutil.rmtree(folder, ignore_errors=True)
