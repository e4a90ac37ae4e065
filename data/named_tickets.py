"""What the database holds about the tickets live events name (docs/architecture.md, invariant 1).

Events are hints: the live hub routes and filters them by the ticket row they
name, never by what they say about ward, category or sensitivity. This module
answers, in one round trip per batch of events, which tickets the names
refer to (id, or tracking number in any case and spacing, through the
``opsdash_key(tracking_number)`` index of migration 0006), where each belongs,
whether the sensitivity rule lets it be shown, and which categories are known.

Deliberately unscoped: it answers only these questions, never a ticket's
content, for the hub to decide delivery before any session sees anything.
"""
from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Iterable, Literal

from sqlalchemy import Engine, func, or_, select

from .models import KnownCategory, Ticket
from .sensitivity import DEFAULT_CATEGORIES, name_key
from .tickets import visible_ticket


@dataclass(frozen=True)
class NamedTicket:
    """Where a ticket belongs and whether it may be shown: the database's word, not the event's."""

    id: uuid.UUID
    municipality_id: uuid.UUID
    ward_id: str | None
    visible: bool


@dataclass(frozen=True)
class TicketLookup:
    """The tickets a batch of events names, and the known categories, read together."""

    by_id: dict[uuid.UUID, NamedTicket] = field(default_factory=dict)
    by_tracking_key: dict[str, tuple[NamedTicket, ...]] = field(default_factory=dict)
    known_categories: frozenset[str] = frozenset(DEFAULT_CATEGORIES)

    def resolve(self, ticket_id: uuid.UUID | None,
                tracking_key: str | None) -> NamedTicket | None | Literal["conflict"]:
        """The one ticket both names point to; None when they name nothing the database has.

        "conflict" when the names disagree: two tickets, a tracking number that
        matches several (``ETH-1`` and ``eth-1``), or one name found and the other not.
        """
        found: list[set[uuid.UUID]] = []
        if ticket_id is not None:
            found.append({ticket_id} if ticket_id in self.by_id else set())
        if tracking_key is not None:
            found.append({t.id for t in self.by_tracking_key.get(tracking_key, ())})
        if not found or not any(found):
            return None
        ids = set.union(*found)
        if len(ids) != 1 or not all(found):
            return "conflict"
        only = next(iter(ids))
        return self.by_id.get(only) or self.by_tracking_key[tracking_key][0]  # type: ignore[index]


def known_categories(engine: Engine) -> frozenset[str]:
    """The category keys that may be shown (``ticket_categories``)."""
    with engine.connect() as conn:
        return frozenset(conn.execute(_KNOWN).scalars())


_KNOWN = select(KnownCategory.key)


def lookup_named_tickets(engine: Engine, ticket_ids: Iterable[uuid.UUID],
                         tracking_keys: Iterable[str] = ()) -> TicketLookup:
    """One query for every named ticket (by id or ``name_key`` of its tracking number), and one
    for the known categories, on one connection."""
    ids = list(dict.fromkeys(ticket_ids))
    keys = list(dict.fromkeys(k for k in tracking_keys if k))
    by_id: dict[uuid.UUID, NamedTicket] = {}
    by_key: dict[str, list[NamedTicket]] = {}
    tracking_key = func.opsdash_key(Ticket.tracking_number)
    with engine.connect() as conn:
        if ids or keys:
            stmt = select(Ticket.id, tracking_key, Ticket.tenant_id, Ticket.ward_id, visible_ticket()).where(
                or_(Ticket.id.in_(ids), tracking_key.in_(keys)))
            wanted_ids, wanted_keys = set(ids), set(keys)
            for tid, key, tenant, ward, visible in conn.execute(stmt):
                # NULL (a NULL flag or category) is not True: not visible, fail closed.
                ticket = NamedTicket(id=tid, municipality_id=tenant, ward_id=ward, visible=bool(visible))
                if tid in wanted_ids:
                    by_id[tid] = ticket
                if key in wanted_keys:
                    by_key.setdefault(key, []).append(ticket)
        known = frozenset(conn.execute(_KNOWN).scalars())
    return TicketLookup(by_id=by_id, by_tracking_key={k: tuple(v) for k, v in by_key.items()},
                        known_categories=known)


def ticket_visibility(engine: Engine, ticket_id: uuid.UUID | str | None = None, *,
                      tracking_number: str | None = None) -> Literal["missing", "sensitive", "visible", "conflict"]:
    """Whether the ticket named by id and/or tracking number may be shown (publishers check this)."""
    try:
        tid = None if ticket_id is None else (
            ticket_id if isinstance(ticket_id, uuid.UUID) else uuid.UUID(str(ticket_id)))
    except ValueError:
        return "missing"
    key = name_key(tracking_number) or None
    ticket = lookup_named_tickets(engine, [tid] if tid else [], [key] if key else []).resolve(tid, key)
    if ticket is None or ticket == "conflict":
        return "missing" if ticket is None else "conflict"
    return "visible" if ticket.visible else "sensitive"


__all__ = ["NamedTicket", "TicketLookup", "known_categories", "lookup_named_tickets", "ticket_visibility"]
