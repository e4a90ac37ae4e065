"""A private PostgreSQL cluster on a loopback port, for tests that stop, restart or copy a server.

The machine's shared PostgreSQL (127.0.0.1:5432) is never restarted by a test:
other test runs use it. A test that needs to take PostgreSQL away (the fault
suite) or to add a streaming replica (``pg_basebackup``) starts a cluster of its
own in a temporary folder::

    with pg_cluster() as cluster:            # initdb + start, trust auth, 127.0.0.1 only
        url = cluster.create_database("opsdash")
        ...
        cluster.stop()                        # clients see "the database system is shutting down"
        cluster.start()                       # same port, same data
        with replica_of(cluster) as replica:  # pg_basebackup -R, streaming, read-only
            ...

``initdb`` refuses to run as root: as root the server's programs run as the
``postgres`` system user (``runuser``), which then owns the folder. The
server listens on 127.0.0.1 and a Unix socket inside its own folder (never
/var/run/postgresql, the shared server's). Durability is traded for speed
(``fsync=off``): a test cluster is thrown away.
"""
from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import subprocess
import tempfile
import time
import uuid
from pathlib import Path
from typing import Iterator, Sequence

from .servers import free_port
from .services import service_missing

PG_BIN_CANDIDATES = ("/usr/lib/postgresql/15/bin", "/usr/lib/postgresql/16/bin", "/usr/lib/postgresql/17/bin",
                     "/usr/lib/postgresql/14/bin")
#: The system user PostgreSQL's programs run as when the tests run as root (initdb refuses root).
OWNER = "postgres"
SUPERUSER = "postgres"
#: Settings of every test cluster: quick to start and stop, nothing a test keeps.
FAST = {"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off", "max_connections": "100",
        "shared_buffers": "32MB", "log_min_messages": "warning"}


def pg_bin() -> Path | None:
    """The folder of initdb/pg_ctl (Debian's PostgreSQL packages), or None."""
    for folder in PG_BIN_CANDIDATES:
        if (Path(folder) / "initdb").is_file():
            return Path(folder)
    return None


def require_pg_bin() -> Path:
    folder = pg_bin()
    if folder is None:
        service_missing("PostgreSQL's server programs (initdb, pg_ctl) are not installed (apt-get install postgresql)")
    return folder  # type: ignore[return-value]


def _as_owner() -> list[str]:
    """The prefix that runs a command as the cluster's owner: ``runuser -u postgres --`` as root, else nothing."""
    if os.geteuid() != 0:
        return []
    try:
        pwd.getpwnam(OWNER)
    except KeyError:
        service_missing(f"running as root, and there is no {OWNER!r} user to run PostgreSQL's programs as")
    return ["runuser", "-u", OWNER, "--"]


class PgCluster:
    """One PostgreSQL server: a data folder, a port, ``start``/``stop``/``restart``."""

    def __init__(self, data_dir: Path, port: int | None = None, settings: dict[str, str] | None = None) -> None:
        self.bin = require_pg_bin()
        self.data_dir = Path(data_dir)
        self.port = port or free_port()
        self.settings = {**FAST, **(settings or {})}
        self.log_path = self.data_dir.parent / f"{self.data_dir.name}.log"

    # ---------------------------------------------------------------- running programs
    def run(self, program: str, *args: str, timeout: float = 60, check: bool = True) -> subprocess.CompletedProcess:
        """One of PostgreSQL's programs (``initdb``, ``pg_ctl``, ``pg_basebackup``, ...), as the owner."""
        result = subprocess.run([*_as_owner(), str(self.bin / program), *args], capture_output=True, text=True,
                                timeout=timeout, cwd="/")
        if check and result.returncode != 0:
            raise RuntimeError(f"{program} {' '.join(args)} failed ({result.returncode}):\n"
                               f"{result.stdout}\n{result.stderr}\n{self.log()}")
        return result

    def log(self, tail: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-tail:]
        except OSError:
            return ""

    # ---------------------------------------------------------------- life cycle
    def init(self) -> PgCluster:
        """``initdb`` with trust authentication for local and loopback connections (replication included)."""
        self.run("initdb", "-D", str(self.data_dir), "-U", SUPERUSER, "--auth=trust", "-E", "UTF8",
                 "--locale=C.UTF-8", "--no-instructions", timeout=120)
        self.write_settings()
        return self

    def write_settings(self) -> None:
        """Port, addresses, socket folder and ``self.settings`` into postgresql.auto.conf (read at start)."""
        lines = [f"port = {self.port}", "listen_addresses = '127.0.0.1'",
                 f"unix_socket_directories = '{self.data_dir}'"]
        lines += [f"{name} = '{value}'" for name, value in self.settings.items()]
        path = self.data_dir / "postgresql.auto.conf"
        existing = path.read_text() if path.exists() else ""
        path.write_text(existing + "\n" + "\n".join(lines) + "\n")

    def start(self, timeout: float = 30) -> None:
        self.run("pg_ctl", "-D", str(self.data_dir), "-l", str(self.log_path), "-w", "-t", str(int(timeout)),
                 "start", timeout=timeout + 10)
        self.wait_ready(timeout)

    def stop(self, mode: str = "fast", timeout: float = 30) -> None:
        """``fast``: every session is ended at once (clients see their connection closed), as a restart does."""
        if self.running:
            self.run("pg_ctl", "-D", str(self.data_dir), "-m", mode, "-w", "-t", str(int(timeout)), "stop",
                     timeout=timeout + 10)

    def restart(self, down_s: float = 0.0) -> None:
        """Stop, stay down ``down_s`` seconds, start again on the same port with the same data."""
        self.stop()
        time.sleep(down_s)
        self.start()

    @property
    def running(self) -> bool:
        return (self.data_dir / "postmaster.pid").exists() and self.run(
            "pg_ctl", "-D", str(self.data_dir), "status", check=False).returncode == 0

    def answers(self) -> bool:
        import psycopg

        try:
            with psycopg.connect(self.dsn(), connect_timeout=2):
                return True
        except psycopg.Error:
            return False

    def wait_ready(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while not self.answers():
            if time.monotonic() > deadline:
                raise RuntimeError(f"PostgreSQL on port {self.port} did not answer within {timeout}s:\n{self.log()}")
            time.sleep(0.1)

    # ---------------------------------------------------------------- connections
    def dsn(self, database: str = "postgres") -> str:
        return f"host=127.0.0.1 port={self.port} user={SUPERUSER} dbname={database}"

    def url(self, database: str = "postgres") -> str:
        """The SQLAlchemy URL OpsDash takes (``OPSDASH_DATABASE_URL``)."""
        return f"postgresql+psycopg://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    def execute(self, sql: str, database: str = "postgres", params: Sequence | None = None) -> list[tuple]:
        """One statement in autocommit; its rows (empty for statements without any)."""
        import psycopg

        with psycopg.connect(self.dsn(database), autocommit=True, connect_timeout=5) as conn:
            cursor = conn.execute(sql, params)
            return cursor.fetchall() if cursor.description else []

    def create_database(self, name: str | None = None) -> str:
        """A new database; its URL."""
        name = name or f"opsdash_{uuid.uuid4().hex[:8]}"
        self.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)


def _private_folder(prefix: str) -> Path:
    """A temporary folder PostgreSQL's owner may write in (as root: handed over to ``postgres``)."""
    base = Path(tempfile.mkdtemp(prefix=prefix))
    if os.geteuid() == 0:
        owner = pwd.getpwnam(OWNER)
        os.chown(base, owner.pw_uid, owner.pw_gid)
    base.chmod(0o700)
    return base


@contextlib.contextmanager
def pg_cluster(port: int | None = None, settings: dict[str, str] | None = None) -> Iterator[PgCluster]:
    """A new cluster (initdb) started on ``port`` (default: a free one); stopped and deleted on exit."""
    require_pg_bin()
    base = _private_folder("opsdash-pg-")
    cluster = PgCluster(base / "data", port=port, settings=settings)
    try:
        cluster.init()
        cluster.start()
        yield cluster
    finally:
        with contextlib.suppress(Exception):
            cluster.stop(mode="immediate")
        shutil.rmtree(base, ignore_errors=True)


@contextlib.contextmanager
def replica_of(primary: PgCluster, port: int | None = None) -> Iterator[PgCluster]:
    """A streaming replica of ``primary`` (``pg_basebackup -R``: standby.signal and primary_conninfo),
    started read-only on its own port; stopped and deleted on exit."""
    base = _private_folder("opsdash-pg-replica-")
    replica = PgCluster(base / "data", port=port, settings={})
    try:
        replica.run("pg_basebackup", "-h", "127.0.0.1", "-p", str(primary.port), "-U", SUPERUSER,
                    "-D", str(replica.data_dir), "-R", "-X", "stream", "-c", "fast", timeout=120)
        replica.settings = {k: v for k, v in primary.settings.items()}
        replica.write_settings()  # its own port and socket folder win: later lines override the copied ones
        replica.start()
        yield replica
    finally:
        with contextlib.suppress(Exception):
            replica.stop(mode="immediate")
        shutil.rmtree(base, ignore_errors=True)


__all__ = ["PgCluster", "pg_bin", "pg_cluster", "replica_of", "require_pg_bin"]
