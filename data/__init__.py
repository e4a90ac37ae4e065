"""OpsDash data layer: plain Python (no Panel), usable from a notebook or a script.

    >>> from data import connect, scope_for_user, TicketFilters, scoped_tickets
    >>> engine = connect()                      # OPSDASH_DATABASE_URL, or the checkout's var/ SQLite
    >>> scope = scope_for_user(engine, "manager.ethekwini")
    >>> frame = scoped_tickets(engine, scope, TicketFilters(statuses=("open",)))
    >>> frame = scoped_tickets(reads().engine(), scope)  # OPSDASH_READ_DATABASE_URL's replica, when caught up
"""
from __future__ import annotations

from sqlalchemy import Engine

from .errors import ConfigError, InvalidFilter, InvalidValue, NotAuthorized, NotFound, OpsDashError
from .filters import TicketFilters
from .scope import Scope, scope_for_user
from .settings import Settings, load_settings
from .aggregates import (
    Figures,
    Kpis,
    counts_by,
    counts_by_pair,
    created_and_resolved_by_day,
    ticket_breakdown,
    ticket_figures,
    ticket_kpis,
)
from .tickets import TicketPage, count_tickets, iter_ticket_chunks, page_rows, scoped_tickets, ticket_page


def connect(url: str | None = None, *, migrate_schema: bool = False) -> Engine:
    """The shared Engine for ``url`` (default: the configured database).

    Without ``migrate_schema`` the database must already hold OpsDash data; a missing or empty
    one raises ConfigError, one sentence naming the command that makes it (``data.db.no_data``).
    """
    from .db import get_engine, has_data, migrate, no_data, sqlite_file

    url = url or load_settings().database_url
    database_file = sqlite_file(url)
    if not migrate_schema and database_file is not None and not database_file.is_file():
        raise no_data(url)  # before connecting: SQLite would leave an empty file behind
    engine = get_engine(url)
    if migrate_schema:
        migrate(engine)
    elif not has_data(engine):
        raise no_data(url)
    return engine


def reads():
    """Where big reads may go (``data.replica.ReadRoute``): ``.engine()`` is ``OPSDASH_READ_DATABASE_URL``'s
    replica once it holds what the primary has, else the primary (``OPSDASH_DATABASE_URL``)."""
    from .replica import read_route

    settings = load_settings()
    return read_route(settings.database_url, settings.read_database_url)


__all__ = [
    "ConfigError", "Figures", "InvalidFilter", "InvalidValue", "Kpis", "NotAuthorized", "NotFound", "OpsDashError", "Scope",
    "Settings", "TicketFilters", "TicketPage", "connect", "reads", "count_tickets", "counts_by", "counts_by_pair", "created_and_resolved_by_day",
    "iter_ticket_chunks", "load_settings", "page_rows", "scope_for_user", "scoped_tickets", "ticket_breakdown", "ticket_figures", "ticket_kpis", "ticket_page",
]
