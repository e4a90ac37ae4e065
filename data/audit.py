"""The export audit trail (docs/architecture.md, invariant 6: every export is written down)."""
from __future__ import annotations

from datetime import datetime, timezone

from sqlalchemy import Engine, select

from .db import session_scope
from .filters import TicketFilters, applied_filters
from .models import ExportAudit
from .scope import Scope

CHANNELS = ("ui", "http", "cli", "api")


def record_export(
    engine: Engine, scope: Scope, *, fmt: str, filters: TicketFilters, row_count: int, duration_ms: int,
    channel: str, at: datetime | None = None,
) -> int:
    """Write one audit row (who, when, format, filters, rows, duration, channel); returns its id.

    The filters recorded are those ``scope`` applies (``filters.applied_filters``): a councillor's
    ignored ward filter is not written down as if it had narrowed the export.
    """
    if channel not in CHANNELS:
        raise ValueError(f"unknown export channel {channel!r}")
    row = ExportAudit(
        username=scope.username or "(unknown)", municipality_id=scope.municipality_id, ward_id=scope.ward_id,
        format=fmt, filters=applied_filters(scope, filters).to_json(), row_count=int(row_count), duration_ms=int(duration_ms),
        channel=channel, created_at=at or datetime.now(timezone.utc),
    )
    with session_scope(engine) as session:
        session.add(row)
        session.flush()
        return int(row.id)


def recent_exports(engine: Engine, *, username: str | None = None, limit: int = 50) -> list[ExportAudit]:
    """The latest audit rows, newest first (optionally of one user)."""
    stmt = select(ExportAudit).order_by(ExportAudit.created_at.desc(), ExportAudit.id.desc()).limit(limit)
    if username is not None:
        stmt = stmt.where(ExportAudit.username == username)
    with session_scope(engine) as session:
        return list(session.scalars(stmt))
