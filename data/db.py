"""Engines, sessions and schema migrations (Alembic, on SQLite and PostgreSQL)."""
from __future__ import annotations

from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Iterator

from psycopg import errors as pg_errors
from sqlalchemy import Engine, create_engine, event, inspect, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.orm import Session, sessionmaker

from .errors import ConfigError, DatabaseSlow
from .sensitivity import name_key

MIGRATIONS_DIR = Path(__file__).with_name("migrations")
_engines: dict[str, Engine] = {}

#: Memory one statement over a whole municipality may sort in (PostgreSQL's default
#: of 4 MB spills the median's million response times to disk). Set per transaction
#: only, by ``SORT_MEMORY_SQL``.
BULK_SORT_MEMORY = "64MB"
#: ``SET LOCAL work_mem`` as a statement with one parameter (BULK_SORT_MEMORY): PostgreSQL only.
SORT_MEMORY_SQL = "SELECT set_config('work_mem', %s, true)"
#: ``SET LOCAL`` for a statement that hashes groups out of every visible ticket: room for the
#: hash tables (as ``SORT_MEMORY_SQL``: one parameter, BULK_SORT_MEMORY) and no JIT
#: compilation, which at a million tickets took longer than it saved. PostgreSQL only.
HASH_GROUPING_SQL = "SELECT set_config('work_mem', %s, true), set_config('jit', 'off', true)"
#: What makes OpsDash data, for the sentence a missing or empty database gets (``no_data``).
#: Connections per engine: POOL_SIZE kept open, up to MAX_OVERFLOW more under load. ``data.workers``
#: sizes its lanes of worker threads from these, so the threads can never want more connections.
POOL_SIZE = 10
MAX_OVERFLOW = 20
#: How PostgreSQL lists OpsDash's connections (``pg_stat_activity.application_name``) unless the URL names one.
APPLICATION_NAME = "opsdash"
#: The statement timeout of the work running in this context, in ms (0: none). Set by
#: ``statement_timeout`` (``data.workers`` does it for the served dashboard's lanes).
_statement_timeout_ms: ContextVar[int] = ContextVar("opsdash_statement_timeout_ms", default=0)
#: What a view says when PostgreSQL stopped its query at the statement timeout.
SLOW_MESSAGE = ("The ticket database is slow right now: the figures took longer than {seconds:g} s to load and "
                "were not updated. They load again by themselves.")
MAKE_DATA = ("run `make serve` once for the demo data (`opsdash serve --demo` outside a clone) "
             "or `opsdash init-db && opsdash seed`, or set OPSDASH_DATABASE_URL to the database to use")


def make_engine(url: str, **kwargs) -> Engine:
    """A new Engine for ``url`` with the settings OpsDash relies on.

    SQLite: the parent folder is created, foreign keys are enforced, WAL lets
    the simulator write while the dashboard reads. PostgreSQL: pre-ping so a
    restarted server costs one retry, not an error page; ``statement_timeout``
    applies to the connections it hands out. Both: a pool of
    POOL_SIZE + MAX_OVERFLOW connections (a file database; ``data.workers``).
    """
    parsed = make_url(url)
    # A failed statement's error (and so a log line) never shows its parameters: a search
    # text, a ticket's text, a username (dashboard_app/log_format.py).
    kwargs.setdefault("hide_parameters", True)
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database
        if database and database != ":memory:" and not database.startswith("file:"):
            Path(database).parent.mkdir(parents=True, exist_ok=True)
        kwargs.setdefault("connect_args", {"check_same_thread": False, "timeout": 30})
        if database and database != ":memory:" and not database.startswith("file:"):
            kwargs.setdefault("pool_size", POOL_SIZE)  # SQLAlchemy's default for a file is 5 + 10
            kwargs.setdefault("max_overflow", MAX_OVERFLOW)
        engine = create_engine(url, **kwargs)

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection, _record):  # pragma: no cover - trivial
            # SQLite's lower() and LIKE fold ASCII only; search (ILIKE compiles to
            # lower(x) LIKE lower(y)) must match "École" for "école" as PostgreSQL does.
            dbapi_connection.create_function("lower", 1, _unicode_lower, deterministic=True)
            # The sensitivity rule's key (data.sensitivity), which PostgreSQL has as a SQL
            # function: tickets.category_key and the tracking-number index call it.
            dbapi_connection.create_function("opsdash_key", 1, name_key, deterministic=True)
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.close()

        return engine
    kwargs.setdefault("pool_pre_ping", True)
    kwargs.setdefault("pool_size", POOL_SIZE)
    kwargs.setdefault("max_overflow", MAX_OVERFLOW)
    if "application_name" not in parsed.query:
        kwargs.setdefault("connect_args", {"application_name": APPLICATION_NAME})
    engine = create_engine(url, **kwargs)
    event.listen(engine, "checkout", _apply_statement_timeout)
    event.listen(engine, "handle_error", _slow_query)
    return engine


@contextmanager
def statement_timeout(seconds: float | None) -> Iterator[None]:
    """PostgreSQL stops any statement of this context's connections that runs over ``seconds``
    (None or 0: no limit), and it fails with DatabaseSlow.

    Applied when a connection is taken from the pool, and only when it differs from what that
    connection has: the usual checkout costs nothing.
    """
    token = _statement_timeout_ms.set(int(seconds * 1000) if seconds else 0)
    try:
        yield
    finally:
        _statement_timeout_ms.reset(token)


def _apply_statement_timeout(dbapi_connection, record, _proxy) -> None:
    wanted = _statement_timeout_ms.get()
    if record.info.get("statement_timeout_ms", 0) == wanted:
        return
    with dbapi_connection.cursor() as cursor:
        cursor.execute("SELECT set_config('statement_timeout', %s, false)", (str(wanted),))
    # Committed at once: a session setting made in a transaction that is later rolled back (the pool's
    # reset on return) would be undone, and the record below would then be wrong.
    dbapi_connection.commit()
    record.info["statement_timeout_ms"] = wanted


def _slow_query(context) -> None:
    """A statement stopped at this context's timeout becomes DatabaseSlow (a message for the user)."""
    wanted = _statement_timeout_ms.get()
    if wanted and isinstance(context.original_exception, pg_errors.QueryCanceled):
        raise DatabaseSlow(SLOW_MESSAGE.format(seconds=wanted / 1000)) from context.original_exception


def _unicode_lower(value):
    return value.lower() if isinstance(value, str) else value


def get_engine(url: str) -> Engine:
    """The process-wide Engine for ``url`` (one connection pool per URL)."""
    engine = _engines.get(url)
    if engine is None:
        engine = _engines[url] = make_engine(url)
    return engine


def sqlite_file(url: str | URL) -> Path | None:
    """The absolute file of a SQLite URL; None for PostgreSQL and in-memory databases."""
    parsed = make_url(url)
    database = parsed.database
    if parsed.get_backend_name() != "sqlite" or not database or database == ":memory:" or database.startswith("file:"):
        return None
    return Path(database).resolve()


def no_data(url: str | URL) -> ConfigError:
    """The one sentence for a database without OpsDash data: where we looked and what to run."""
    where = sqlite_file(url) or make_url(url).render_as_string(hide_password=True)
    return ConfigError(f"No OpsDash data in {where}: {MAKE_DATA}.")


def has_data(engine: Engine) -> bool:
    """The schema is there and holds a municipality (the first thing seed or the ticketing system writes)."""
    if not inspect(engine).has_table("municipalities"):
        return False
    with engine.connect() as connection:
        return connection.execute(text("SELECT 1 FROM municipalities LIMIT 1")).first() is not None


def session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


@contextmanager
def session_scope(engine: Engine) -> Iterator[Session]:
    """A Session that commits on success and rolls back on error."""
    with Session(engine, expire_on_commit=False) as session:
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise


def _alembic_config(engine: Engine):
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("sqlalchemy.url", engine.url.render_as_string(hide_password=False).replace("%", "%%"))
    return config


def migrate(engine: Engine, revision: str = "head") -> None:
    """Create or upgrade the schema to ``revision``. Idempotent."""
    from alembic import command

    config = _alembic_config(engine)
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, revision)


def schema_revision(engine: Engine) -> str | None:
    """The Alembic revision the database is at (None when not initialised)."""
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def is_initialised(engine: Engine) -> bool:
    return inspect(engine).has_table("tickets")
