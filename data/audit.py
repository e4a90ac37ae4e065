"""The export audit trail (docs/architecture.md, invariant 6: every export is written down).

Every attempt leaves a row: ``outcome = 'ok'`` when the file was delivered,
``'failed'`` when it was not (the database went away under the export, the
disk filled up, ...). A failure caused by the database is often one the
database cannot record at that moment: such rows wait in this process
(``pending_count``) and are written as soon as it answers again, by the next
export's audit or by ``write_pending`` (the server calls it every few seconds
while rows wait; ``opsdash export`` before it exits). Each waiting row is
also in the log (who, format, channel; never ticket data), so a process that
dies before the database returns still leaves a trace.
"""
from __future__ import annotations

import collections
import logging
import threading
import time
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import Engine, insert, select

from .db import session_scope
from .filters import TicketFilters, applied_filters
from .models import ExportAudit
from .scope import Scope

CHANNELS = ("ui", "http", "cli", "api")
OUTCOMES = ("ok", "failed")
#: Failed exports still to be written down: at most this many wait (an outage of hours that
#: makes more keeps the newest; the log has every one).
MAX_PENDING = 10_000
log = logging.getLogger("opsdash.audit")

_pending: collections.deque[tuple[Engine, dict[str, Any]]] = collections.deque(maxlen=MAX_PENDING)
_pending_lock = threading.Lock()
#: One writer of the waiting rows at a time (the server's timer and an export may both try).
_writer = threading.Lock()


def _values(scope: Scope, *, fmt: str, filters: TicketFilters | None, row_count: int, duration_ms: int,
            channel: str, at: datetime | None, outcome: str) -> dict[str, Any]:
    if channel not in CHANNELS:
        raise ValueError(f"unknown export channel {channel!r}")
    if outcome not in OUTCOMES:
        raise ValueError(f"unknown export outcome {outcome!r}")
    return dict(
        username=scope.username or "(unknown)", municipality_id=scope.municipality_id, ward_id=scope.ward_id,
        format=fmt, filters=applied_filters(scope, filters).to_json(), row_count=int(row_count),
        duration_ms=int(duration_ms), channel=channel, outcome=outcome, created_at=at or datetime.now(timezone.utc),
    )


def record_export(
    engine: Engine, scope: Scope, *, fmt: str, filters: TicketFilters, row_count: int, duration_ms: int,
    channel: str, at: datetime | None = None, outcome: str = "ok",
) -> int:
    """Write one audit row (who, when, format, filters, rows, duration, channel, outcome); returns its id.

    The filters recorded are those ``scope`` applies (``filters.applied_filters``): a councillor's
    ignored ward filter is not written down as if it had narrowed the export. Rows of earlier
    failures still waiting for the database are written first.
    """
    values = _values(scope, fmt=fmt, filters=filters, row_count=row_count, duration_ms=duration_ms,
                     channel=channel, at=at, outcome=outcome)
    if _pending:
        write_pending()
    with session_scope(engine) as session:
        row = ExportAudit(**values)
        session.add(row)
        session.flush()
        return int(row.id)


def record_failed_export(
    engine: Engine, scope: Scope, *, fmt: str, filters: TicketFilters | None, duration_ms: int, channel: str,
    row_count: int = 0, at: datetime | None = None,
) -> int | None:
    """The row of an export that delivered no file; its id, or None when it waits for the database.

    Never raises for a database that does not answer: the export's own error is what its caller
    must see. The row then waits in this process (``write_pending``).
    """
    values = _values(scope, fmt=fmt, filters=filters, row_count=row_count, duration_ms=duration_ms,
                     channel=channel, at=at, outcome="failed")
    try:
        with session_scope(engine) as session:
            row = ExportAudit(**values)
            session.add(row)
            session.flush()
            return int(row.id)
    except Exception as exc:  # the database is what failed the export, most likely: keep the row
        with _pending_lock:
            _pending.append((engine, values))
            waiting = len(_pending)
        log.warning("failed %s export by %r (channel %s) not audited yet: the database did not answer (%s); "
                    "written when it does (%d waiting)", fmt, values["username"][:150], channel,
                    type(exc).__name__, waiting)
        return None


def pending_count() -> int:
    """Failed exports of this process still waiting to be written down."""
    return len(_pending)


def write_pending(within_s: float = 0.0, *, pause_s: float = 1.0) -> int:
    """Write the waiting rows, oldest first; returns how many were written.

    Stops at the first row the database refuses (it is still away); with ``within_s`` it tries
    again every ``pause_s`` until then (``opsdash export`` before it exits).
    """
    deadline = time.monotonic() + within_s
    written = 0
    while True:
        with _writer:
            while True:
                with _pending_lock:
                    if not _pending:
                        return written
                    engine, values = _pending[0]
                try:
                    with engine.begin() as conn:
                        conn.execute(insert(ExportAudit), [values])
                except Exception as exc:
                    log.info("waiting export audit rows not written yet (%s)", type(exc).__name__)
                    break
                with _pending_lock:
                    if _pending and _pending[0][1] is values:
                        _pending.popleft()
                written += 1
                log.info("audited a failed %s export by %r that waited for the database", values["format"],
                         values["username"][:150])
        if time.monotonic() + pause_s > deadline:
            return written
        time.sleep(pause_s)


def recent_exports(engine: Engine, *, username: str | None = None, limit: int = 50,
                   outcome: str | None = None) -> list[ExportAudit]:
    """The latest audit rows, newest first (optionally of one user, of one outcome)."""
    stmt = select(ExportAudit).order_by(ExportAudit.created_at.desc(), ExportAudit.id.desc()).limit(limit)
    if username is not None:
        stmt = stmt.where(ExportAudit.username == username)
    if outcome is not None:
        stmt = stmt.where(ExportAudit.outcome == outcome)
    with session_scope(engine) as session:
        return list(session.scalars(stmt))
