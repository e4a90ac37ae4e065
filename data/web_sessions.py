"""Server-side sign-in sessions: a sign-in is a database row, so signing out really ends it.

The browser holds only a random session id (in a signed cookie); the table
keeps its SHA-256, so a copy of the table opens no session. A session is
valid while it is neither expired nor revoked and its user is still active.
Sign-out revokes one session; a password change, disabling the account and
an administrator's "sign out everywhere" revoke all of a user's sessions.

Its own table object (not in ``models.py``): nothing but this module reads
or writes it. Migration 0008 creates it.

Every revocation is also announced (``announce_revoked``): on Redis channel
``REVOKED_CHANNEL`` when ``OPSDASH_REDIS_URL`` is set, so every server
process closes the revoked sessions' open dashboards at once, whichever
process (or ``opsdash user`` command) revoked them; on the in-process bus
otherwise (one process). The table stays the truth: an announcement that is
lost (Redis down) only leaves the open page to its next session check.
The announcement carries table keys only (hashes that open nothing).
"""
from __future__ import annotations

import hashlib
import json
import logging
import secrets
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import redis
from sqlalchemy import Column, Engine, Index, MetaData, String, Table, and_, select, update

from .bus import bus_for
from .models import UTCDateTime, User
from .settings import current_settings

log = logging.getLogger("opsdash.session")

metadata = MetaData()
web_sessions = Table(
    "web_sessions", metadata,
    Column("key", String(64), primary_key=True),  # sha256 hex of the id the cookie carries
    Column("username", String(150), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("expires_at", UTCDateTime, nullable=False),
    Column("revoked_at", UTCDateTime, nullable=True),
    Column("revoked_reason", String(32), nullable=True),
    Index("ix_web_sessions_username", "username"),
)
# Reasons a session ends early (stored, and shown to nobody but an operator reading the table).
SIGNED_OUT, PASSWORD_CHANGED, DISABLED, SIGNED_OUT_EVERYWHERE = "signed_out", "password_changed", "disabled", "everywhere"
#: Where revocations are announced (not under ``dashboard:``: the live hub never sees them).
REVOKED_CHANNEL = "opsdash:sessions:revoked"
_publishers: dict[str, redis.Redis] = {}
_publishers_lock = threading.Lock()


def session_key(session_id: str) -> str:
    """The table's key for a session id (also the only form of it a page may carry)."""
    return hashlib.sha256(session_id.encode("utf-8", "replace")).hexdigest()


@dataclass(frozen=True)
class WebSession:
    key: str
    username: str
    expires_at: datetime


def _now(now: datetime | None) -> datetime:
    return now or datetime.now(timezone.utc)


def start_session(engine: Engine, username: str, lifetime: timedelta, *, now: datetime | None = None) -> str:
    """Record a new session for ``username``; returns its id (for the signed cookie, never stored)."""
    session_id = secrets.token_urlsafe(32)
    start = _now(now)
    with engine.begin() as conn:
        conn.execute(web_sessions.insert().values(key=session_key(session_id), username=username,
                                                  created_at=start, expires_at=start + lifetime))
    return session_id


def valid_session(engine: Engine, *, session_id: str | None = None, key: str | None = None,
                  now: datetime | None = None) -> WebSession | None:
    """The session if it is live (not expired, not revoked, its user active); None otherwise."""
    if key is None:
        if not session_id:
            return None
        key = session_key(session_id)
    stmt = (select(web_sessions.c.key, web_sessions.c.username, web_sessions.c.expires_at)
            .join(User.__table__, User.__table__.c.username == web_sessions.c.username)
            .where(web_sessions.c.key == key, web_sessions.c.revoked_at.is_(None),
                   web_sessions.c.expires_at > _now(now), User.__table__.c.is_active.is_(True)))
    with engine.connect() as conn:
        row = conn.execute(stmt).first()
    return None if row is None else WebSession(row.key, row.username, row.expires_at)


def revoke_session(engine: Engine, session_id: str, reason: str = SIGNED_OUT) -> bool:
    """End one session (sign-out). True when a live one was ended."""
    return _revoke(engine, web_sessions.c.key == session_key(session_id), reason) > 0


def revoke_user_sessions(engine: Engine, username: str, reason: str = SIGNED_OUT_EVERYWHERE) -> int:
    """End every live session of ``username``; how many were ended."""
    return _revoke(engine, web_sessions.c.username == username, reason)


def _revoke(engine: Engine, which, reason: str) -> int:
    live = and_(which, web_sessions.c.revoked_at.is_(None))
    with engine.begin() as conn:
        keys = list(conn.scalars(select(web_sessions.c.key).where(live)))
        if not keys:
            return 0
        result = conn.execute(update(web_sessions).where(live, web_sessions.c.key.in_(keys))
                              .values(revoked_at=_now(None), revoked_reason=reason))
    announce_revoked(keys)
    return result.rowcount or 0


def announce_revoked(keys: list[str]) -> None:
    """Tell every server process (Redis) or this one (in-process bus) that these sessions ended."""
    if not keys:
        return
    message = json.dumps({"revoked": list(keys)})
    try:
        url = current_settings().redis_url
        if url:
            _publisher(url).publish(REVOKED_CHANNEL, message)
        else:
            bus_for(None).publish_now(REVOKED_CHANNEL, message)  # type: ignore[union-attr]
    except Exception as exc:  # the record is revoked; open pages close at their next check
        log.warning("could not announce %d ended session(s) to the server processes (%s); their open pages "
                    "close at their next session check", len(keys), type(exc).__name__)


def revoked_keys(raw: bytes | str) -> list[str]:
    """The table keys an announcement names (nothing for anything malformed)."""
    try:
        payload = json.loads(raw)
    except (TypeError, ValueError):
        return []
    keys = payload.get("revoked") if isinstance(payload, dict) else None
    if not isinstance(keys, list):
        return []
    return [k for k in keys if isinstance(k, str) and len(k) == 64][:10_000]


def _publisher(url: str) -> redis.Redis:
    with _publishers_lock:
        client = _publishers.get(url)
        if client is None:
            client = _publishers[url] = redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=2)
        return client


def forget_old_sessions(engine: Engine, older_than: timedelta = timedelta(days=30)) -> int:
    """Delete rows of sessions that ended more than ``older_than`` ago (the table stays small)."""
    cutoff = _now(None) - older_than
    with engine.begin() as conn:
        result = conn.execute(web_sessions.delete().where(web_sessions.c.expires_at < cutoff))
    return result.rowcount or 0
