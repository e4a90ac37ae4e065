"""Known categories, and what admins may learn about tickets hidden for an unknown one.

A ticket whose category is not known is sensitive (data.sensitivity: fail
closed). So that a new category of the ticketing system does not stay hidden
by accident, an admin sees how many tickets are hidden that way and the
distinct raw spellings (never a ticket's content), and adds a category on
purpose (``add_known_category``, ``opsdash category add``).
"""
from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Engine, false, func, insert, select
from sqlalchemy.exc import IntegrityError

from .errors import InvalidValue, NotAuthorized
from .models import KnownCategory, Role, Ticket, utcnow
from .named_tickets import known_categories
from .scope import Scope
from .sensitivity import KEY_PATTERN, SENSITIVE_KEY, name_key

#: At most this many spellings are listed (counts cover them all).
MAX_SPELLINGS = 50


@dataclass(frozen=True)
class HiddenCategories:
    """Tickets of one municipality hidden because their category is not known."""

    tickets: int
    #: (spelling, tickets), most tickets first; each spelling quoted, with invisible and
    #: non-ASCII characters written as escapes (``readable_spelling``), so an admin sees what is stored.
    spellings: tuple[tuple[str, int], ...]


def readable_spelling(raw: str) -> str:
    """``raw`` in quotes, every character outside printable ASCII as an escape (``'G\\u0412V'``, ``'fire '``)."""
    def shown(ch: str) -> str:
        if " " <= ch <= "~":
            return ch
        return f"\\u{ord(ch):04x}" if ord(ch) <= 0xFFFF else f"\\U{ord(ch):08x}"

    return "'" + "".join(map(shown, raw)) + "'"


def hidden_categories(engine: Engine, scope: Scope) -> HiddenCategories:
    """Admins only: the count and spellings of tickets hidden for an unknown category.

    Tickets hidden for being gbv (in any spelling) or flagged sensitive are not
    counted here: those are hidden on purpose, and nothing about them is shown.
    """
    if not isinstance(scope, Scope) or scope.role is not Role.ADMIN:
        raise NotAuthorized("only an admin may see how many tickets are hidden for an unknown category")
    stmt = (
        select(Ticket.category, func.count())
        .where(Ticket.tenant_id == scope.municipality_id,
               func.coalesce(Ticket.is_sensitive, false()) == false(),
               Ticket.category_key != SENSITIVE_KEY,
               Ticket.category_key.not_in(select(KnownCategory.key).scalar_subquery()))
        .group_by(Ticket.category)
        .order_by(func.count().desc(), Ticket.category)
    )
    with engine.connect() as conn:
        rows = conn.execute(stmt).all()
    return HiddenCategories(tickets=sum(n for _, n in rows),
                            spellings=tuple((readable_spelling(c), n) for c, n in rows[:MAX_SPELLINGS]))


def add_known_category(engine: Engine, name: str, *, added_by: str | None = None) -> str:
    """Make ``name`` a known category (its tickets then show); returns its key. Idempotent."""
    key = name_key(name) if isinstance(name, str) else None
    if not key or not KEY_PATTERN.fullmatch(key):
        raise InvalidValue(f"a category is 1-32 letters, digits or '_' (got {str(name)[:40]!r})")
    if key == SENSITIVE_KEY:
        raise InvalidValue("gbv is sensitive: its tickets are never shown, so it cannot be a known category")
    if key in known_categories(engine):
        return key
    try:
        with engine.begin() as conn:
            conn.execute(insert(KnownCategory).values(key=key, added_by=added_by, added_at=utcnow()))
    except IntegrityError:  # added meanwhile by someone else: the same outcome
        pass
    return key


__all__ = ["HiddenCategories", "add_known_category", "hidden_categories", "known_categories", "readable_spelling"]
