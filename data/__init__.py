"""OpsDash data layer: plain Python (no Panel), usable from a notebook or a script.

    >>> from data import connect, scope_for_user, TicketFilters, scoped_tickets
    >>> engine = connect()                      # OPSDASH_DATABASE_URL or ./var SQLite
    >>> scope = scope_for_user(engine, "manager.ethekwini")
    >>> frame = scoped_tickets(engine, scope, TicketFilters(statuses=("open",)))
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
from .tickets import TicketPage, count_tickets, iter_ticket_chunks, scoped_tickets, ticket_page


def connect(url: str | None = None, *, migrate_schema: bool = False) -> Engine:
    """The shared Engine for ``url`` (default: the configured database)."""
    from .db import get_engine, migrate

    engine = get_engine(url or load_settings().database_url)
    if migrate_schema:
        migrate(engine)
    return engine


__all__ = [
    "ConfigError", "Figures", "InvalidFilter", "InvalidValue", "Kpis", "NotAuthorized", "NotFound", "OpsDashError", "Scope",
    "Settings", "TicketFilters", "TicketPage", "connect", "count_tickets", "counts_by", "counts_by_pair", "created_and_resolved_by_day",
    "iter_ticket_chunks", "load_settings", "scope_for_user", "scoped_tickets", "ticket_breakdown", "ticket_figures", "ticket_kpis", "ticket_page",
]
