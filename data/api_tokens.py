"""Personal API tokens: how scripts and other clients call ``/api/v1/`` (issue 18).

A token acts as one user, with that user's Scope, decided from the users table
at every use (a disabled user's tokens stop working at once; a role change
applies at the next request). The token is shown once, when it is made; the
table keeps its SHA-256 only.

Why SHA-256 and not argon2 as for passwords: a token is 32 random bytes
(``secrets.token_urlsafe(32)``, 256 bits), so there is nothing to guess from a
leaked hash and no dictionary to slow down; a slow hash protects low-entropy
secrets (passwords) only. A fast hash lets every request look its token up by
an index, in one query, without spending 50 ms of CPU per call.

Every use is recorded (``last_used_at``, ``last_used_from``) by ``verify_token``.
Its own table object (not in ``models.py``): nothing but this module reads or
writes it. Migration 0010 creates it.
"""
from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from sqlalchemy import Column, Engine, ForeignKey, Index, MetaData, String, Table, Uuid, select, update

from .errors import InvalidValue, NotFound
from .models import User, UTCDateTime

metadata = MetaData()
api_tokens = Table(
    "api_tokens", metadata,
    Column("id", String(16), primary_key=True),  # public: shown by `token list`, used by `token revoke`
    Column("user_id", Uuid, ForeignKey(User.__table__.c.id, ondelete="CASCADE"), nullable=False),
    Column("label", String(100), nullable=False),
    Column("hash", String(64), nullable=False),  # sha256 hex of the whole token
    Column("created_at", UTCDateTime, nullable=False),
    Column("expires_at", UTCDateTime, nullable=True),  # None: never (on purpose: `--expires never`)
    Column("revoked_at", UTCDateTime, nullable=True),
    Column("last_used_at", UTCDateTime, nullable=True),
    Column("last_used_from", String(64), nullable=True),
    Index("ix_api_tokens_hash", "hash", unique=True),
    Index("ix_api_tokens_user_id", "user_id"),
)
users = User.__table__

#: Every token starts with this, so a secret scanner (and a person) can tell one when it leaks.
PREFIX = "opsdash_"
#: A token is the prefix and 43 URL-safe characters; anything else is refused without a query.
TOKEN_RE = re.compile(r"^opsdash_[A-Za-z0-9_-]{43}$")
DEFAULT_EXPIRY = timedelta(days=90)
MAX_EXPIRY = timedelta(days=3650)
_EXPIRY_RE = re.compile(r"^\s*(\d{1,5})\s*([dh])\s*$", re.IGNORECASE)
MAX_LABEL = 100


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "replace")).hexdigest()


def parse_expiry(text: str | None) -> timedelta | None:
    """``90d``, ``12h`` or ``never`` (None: no expiry); no text: DEFAULT_EXPIRY."""
    if text is None or not str(text).strip():
        return DEFAULT_EXPIRY
    if str(text).strip().lower() == "never":
        return None
    match = _EXPIRY_RE.match(str(text))
    if not match:
        raise InvalidValue(f"--expires must be like 90d, 12h or never, got {str(text)[:20]!r}")
    amount = int(match.group(1))
    lifetime = timedelta(days=amount) if match.group(2).lower() == "d" else timedelta(hours=amount)
    if lifetime <= timedelta(0) or lifetime > MAX_EXPIRY:
        raise InvalidValue(f"--expires must be between 1h and {MAX_EXPIRY.days}d")
    return lifetime


@dataclass(frozen=True)
class TokenInfo:
    """A token as ``token list`` shows it (never its secret, nor its hash)."""

    id: str
    username: str
    label: str
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    last_used_at: datetime | None
    last_used_from: str | None

    def state(self, now: datetime | None = None) -> str:
        now = now or datetime.now(timezone.utc)
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at is not None and self.expires_at <= now:
            return "expired"
        return "active"


@dataclass(frozen=True)
class TokenUser:
    """Who a valid token acts as: the users-table name (the Scope is built from it) and the token's id."""

    token_id: str
    username: str


def _now(now: datetime | None) -> datetime:
    return now or datetime.now(timezone.utc)


def create_token(engine: Engine, username: str, label: str, lifetime: timedelta | None = DEFAULT_EXPIRY,
                 *, now: datetime | None = None) -> tuple[TokenInfo, str]:
    """A new token for ``username``: (its record, the token itself: shown once, stored only hashed)."""
    label = " ".join(str(label or "").split())
    if not label or len(label) > MAX_LABEL:
        raise InvalidValue(f"a token needs a label of 1-{MAX_LABEL} characters (what it is for, e.g. power-bi)")
    start = _now(now)
    with engine.begin() as conn:
        user = conn.execute(select(users.c.id, users.c.is_active).where(users.c.username == username)).first()
        if user is None:
            raise NotFound(f"no user named {username!r}")
        if not user.is_active:
            raise InvalidValue(f"{username} is disabled; enable the account before giving it a token")
        token = PREFIX + secrets.token_urlsafe(32)
        record = dict(id=secrets.token_hex(6), user_id=user.id, label=label, hash=token_hash(token),
                      created_at=start, expires_at=start + lifetime if lifetime is not None else None)
        conn.execute(api_tokens.insert().values(**record))
    return TokenInfo(record["id"], username, label, start, record["expires_at"], None, None, None), token


def list_tokens(engine: Engine, username: str | None = None) -> list[TokenInfo]:
    """Tokens (of ``username``, or everyone's), newest first."""
    stmt = (select(api_tokens, users.c.username).join(users, users.c.id == api_tokens.c.user_id)
            .order_by(api_tokens.c.created_at.desc(), api_tokens.c.id))
    if username is not None:
        stmt = stmt.where(users.c.username == username)
    with engine.connect() as conn:
        rows = conn.execute(stmt).all()
    return [TokenInfo(r.id, r.username, r.label, r.created_at, r.expires_at, r.revoked_at, r.last_used_at,
                      r.last_used_from) for r in rows]


def revoke_token(engine: Engine, token_id: str, *, now: datetime | None = None) -> bool:
    """Revoke one token by its id; True when a live one was revoked. NotFound for an unknown id."""
    with engine.begin() as conn:
        if conn.execute(select(api_tokens.c.id).where(api_tokens.c.id == str(token_id)[:16])).first() is None:
            raise NotFound(f"no API token with id {str(token_id)[:16]!r} (see `opsdash token list`)")
        result = conn.execute(update(api_tokens).where(api_tokens.c.id == str(token_id)[:16],
                                                       api_tokens.c.revoked_at.is_(None))
                              .values(revoked_at=_now(now)))
    return (result.rowcount or 0) > 0


def verify_token(engine: Engine, token: str, *, address: str | None = None,
                 now: datetime | None = None) -> TokenUser | None:
    """Who ``token`` acts as, when it is live (known, not revoked, not expired, its user active); else None.

    A live token's use is recorded in the same transaction (when, from ``address``).
    """
    if not isinstance(token, str) or not TOKEN_RE.match(token):
        return None
    at = _now(now)
    stmt = (select(api_tokens.c.id, api_tokens.c.expires_at, users.c.username)
            .join(users, users.c.id == api_tokens.c.user_id)
            .where(api_tokens.c.hash == token_hash(token), api_tokens.c.revoked_at.is_(None),
                   users.c.is_active.is_(True)))
    with engine.begin() as conn:
        row = conn.execute(stmt).first()
        if row is None or (row.expires_at is not None and row.expires_at <= at):
            return None
        conn.execute(update(api_tokens).where(api_tokens.c.id == row.id)
                     .values(last_used_at=at, last_used_from=(address or "")[:64] or None))
    return TokenUser(row.id, row.username)


__all__ = ["DEFAULT_EXPIRY", "PREFIX", "TokenInfo", "TokenUser", "api_tokens", "create_token", "list_tokens",
           "parse_expiry", "revoke_token", "token_hash", "verify_token"]
