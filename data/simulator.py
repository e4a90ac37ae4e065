"""Realistic ticket activity for demos and load: changes the database, then publishes.

The simulator plays the ticketing system. Each step it opens tickets, moves
tickets along their life cycle (open -> in progress -> resolved/closed),
re-assigns them, and escalates tickets whose SLA deadline has just passed
(publishing ``sla_breach``). The database is changed first and the event
published after the commit, as the ticketing system does, so a session that
resyncs on an event always finds the change.

It picks tickets through ``scoped_select`` with an admin Scope per
municipality, so it never even reads a sensitive ticket; it does create
sensitive tickets now and then (real data has them) and never announces them.
"""
from __future__ import annotations

import asyncio
import logging
import random
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Callable

from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from .errors import InvalidValue
from .events import Event, EventBus, EventRejected, make_event, publish_event
from .filters import TicketFilters
from .models import OPEN_STATUSES, Municipality, Role, Ticket, Ward
from .scope import Scope
from .seed import CATEGORY_WEIGHTS, DESCRIPTIONS, RESOLUTION_HOURS, RESPONSE_HOURS, SEVERITY_WEIGHTS, STREETS
from .tickets import scoped_select
from .workers import SHORT

log = logging.getLogger("opsdash.simulator")

ASSIGNEES = ("team.water.north", "team.water.south", "team.electric.1", "team.roads", "team.waste", "contractor.ubuntu")
#: Share of each action among the simulated changes.
ACTIONS = {"create": 35, "progress": 40, "assign": 25}


@dataclass
class _Municipality:
    scope: Scope
    code: str
    wards: list[str]


class Simulator:
    """Ticket activity for the municipalities in ``engine`` (or ``municipality_ids``)."""

    def __init__(self, engine: Engine, bus: EventBus, *, municipality_ids: list[uuid.UUID] | None = None,
                 sensitive_share: float = 0.03, random_seed: int | None = None) -> None:
        self.engine = engine
        self.bus = bus
        self.rng = random.Random(random_seed)
        self.sensitive_share = sensitive_share
        self._municipalities = self._load(municipality_ids)
        if not self._municipalities:
            raise InvalidValue("no municipalities to simulate: run `opsdash seed` first")
        # Deadlines that pass after this instant are announced as breaches.
        self._breach_checked_at = datetime.now(timezone.utc)
        self.published = 0
        self.refused = 0

    def _load(self, ids: list[uuid.UUID] | None) -> list[_Municipality]:
        with Session(self.engine) as session:
            stmt = select(Municipality)
            if ids:
                try:
                    wanted = [uuid.UUID(str(i)) for i in ids]
                except ValueError:
                    raise InvalidValue("--municipality must be a municipality id (uuid)") from None
                stmt = stmt.where(Municipality.id.in_(wanted))
            out = []
            for muni in session.execute(stmt.order_by(Municipality.slug)).scalars():
                wards = list(session.execute(
                    select(Ward.id).where(Ward.municipality_id == muni.id).order_by(Ward.number)
                ).scalars())
                code = wards[0].split("-W")[0] if wards else muni.slug[:3].upper()
                scope = Scope(municipality_id=muni.id, role=Role.ADMIN, municipality_name=muni.name,
                              timezone=muni.timezone)
                out.append(_Municipality(scope=scope, code=code, wards=wards))
        return out

    # ------------------------------------------------------------- changes

    def step(self, count: int, now: datetime | None = None) -> list[Event]:
        """Make ``count`` changes (plus any SLA breaches now due) in one transaction.

        Returns the events to publish, built only from non-sensitive tickets.
        """
        now = now or datetime.now(timezone.utc)
        events: list[Event] = []
        with Session(self.engine) as session, session.begin():
            for _ in range(count):
                muni = self.rng.choice(self._municipalities)
                action = self.rng.choices(list(ACTIONS), list(ACTIONS.values()))[0]
                event = getattr(self, f"_{action}")(session, muni, now)
                if event is not None:
                    events.append(event)
            events.extend(self._breaches(session, now))
        return events

    def _pick_open(self, session: Session, muni: _Municipality) -> Ticket | None:
        ids = scoped_select(muni.scope, TicketFilters(statuses=OPEN_STATUSES), ("id",), sort=None)
        ids = ids.order_by(func.random()).limit(1)
        return session.execute(select(Ticket).where(Ticket.id.in_(ids))).scalar_one_or_none()

    def _event(self, kind: str, ticket: Ticket, muni: _Municipality, now: datetime, **extra) -> Event | None:
        try:
            return make_event(
                kind, muni.scope.municipality_id, ward_id=ticket.ward_id, ticket_id=ticket.id, occurred_at=now,
                data={"tracking_number": ticket.tracking_number, "category": ticket.category,
                      "status": ticket.status, "severity": ticket.severity, "assigned_to": ticket.assigned_to,
                      **extra},
                is_sensitive=bool(ticket.is_sensitive),
            )
        except EventRejected:
            # A sensitive ticket (by flag or category): changed in the database, never announced.
            self.refused += 1
            return None

    def _create(self, session: Session, muni: _Municipality, now: datetime) -> Event | None:
        category = self.rng.choices(list(CATEGORY_WEIGHTS), list(CATEGORY_WEIGHTS.values()))[0]
        sensitive = self.rng.random() < self.sensitive_share
        if sensitive:
            category = "gbv"
        severity = self.rng.choices(list(SEVERITY_WEIGHTS), list(SEVERITY_WEIGHTS.values()))[0]
        ticket = Ticket(
            id=uuid.uuid4(), tenant_id=muni.scope.municipality_id,
            ward_id=self.rng.choice(muni.wards) if muni.wards and self.rng.random() > 0.02 else None,
            tracking_number=f"{muni.code}-{now:%y%m}-S{uuid.uuid4().hex[:9].upper()}",
            category=category, status="open", severity=severity,
            description=self.rng.choice(DESCRIPTIONS[category]),
            address=f"{self.rng.randint(1, 999)} {self.rng.choice(STREETS)}",
            is_sensitive=sensitive, created_at=now, updated_at=now,
            sla_response_deadline=now + timedelta(hours=RESPONSE_HOURS[severity]),
            sla_resolution_deadline=now + timedelta(hours=RESOLUTION_HOURS[severity]),
        )
        session.add(ticket)
        session.flush()
        return self._event("ticket_created", ticket, muni, now)

    def _progress(self, session: Session, muni: _Municipality, now: datetime) -> Event | None:
        def advance(ticket: Ticket) -> None:
            if ticket.status == "open":
                ticket.status, ticket.first_responded_at = "in_progress", now
            else:
                ticket.status = "closed" if self.rng.random() < 0.3 else "resolved"
                ticket.resolved_at = now
                ticket.first_responded_at = ticket.first_responded_at or now

        return self._change_open(session, muni, now, "ticket_updated", advance)

    def _assign(self, session: Session, muni: _Municipality, now: datetime) -> Event | None:
        def reassign(ticket: Ticket) -> None:
            ticket.assigned_to = self.rng.choice([a for a in ASSIGNEES if a != ticket.assigned_to])

        return self._change_open(session, muni, now, "assignment_changed", reassign)

    def _change_open(self, session: Session, muni: _Municipality, now: datetime, kind: str,
                     change: Callable[[Ticket], None]) -> Event | None:
        """Apply ``change`` to a random open (visible) ticket; open a new one when none is left."""
        ticket = self._pick_open(session, muni)
        if ticket is None:
            return self._create(session, muni, now)
        change(ticket)
        ticket.updated_at = now
        session.flush()
        return self._event(kind, ticket, muni, now)

    def _breaches(self, session: Session, now: datetime) -> list[Event]:
        """Escalate and announce open tickets whose deadline passed since the last check."""
        since, self._breach_checked_at = self._breach_checked_at, now
        events: list[Event] = []
        for muni in self._municipalities:
            checks = (
                ("response", Ticket.sla_response_deadline, Ticket.first_responded_at.is_(None)),
                ("resolution", Ticket.sla_resolution_deadline, Ticket.resolved_at.is_(None)),
            )
            for kind, deadline, pending in checks:
                ids = scoped_select(muni.scope, TicketFilters(statuses=OPEN_STATUSES), ("id",), sort=None).where(
                    deadline > since, deadline <= now, pending
                ).limit(200)
                tickets = session.execute(select(Ticket).where(Ticket.id.in_(ids))).scalars().all()
                for ticket in tickets:
                    ticket.status, ticket.escalated_at, ticket.updated_at = "escalated", now, now
                    session.flush()
                    event = self._event("sla_breach", ticket, muni, now, breach=kind)
                    if event is not None:
                        events.append(event)
        return events

    # ------------------------------------------------------------- running

    async def publish(self, events: list[Event]) -> None:
        for event in events:
            # publish_event re-checks content; the tickets came from a scoped
            # (never sensitive) select, so the database lookup is not repeated here.
            await publish_event(self.bus, event)
            self.published += 1

    async def run(self, rate: float, duration: float | None = None, *, tick: float = 0.2,
                  stop: asyncio.Event | None = None) -> int:
        """About ``rate`` changes a second for ``duration`` seconds (None: until ``stop``)."""
        if not 0 < rate <= 10_000:
            raise InvalidValue("--rate must be between 0 and 10,000 changes a second")
        if duration is not None and duration <= 0:
            raise InvalidValue("--duration must be a positive number of seconds")
        start = last = time.monotonic()
        owed = 0.0
        while duration is None or time.monotonic() - start < duration:
            if stop is not None and stop.is_set():
                break
            await asyncio.sleep(tick)
            now_m = time.monotonic()
            owed += rate * (now_m - last)
            last = now_m
            count = int(owed)
            owed -= count
            try:
                events = await SHORT.run(self.step, count)
                await self.publish(events)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # keep simulating: the bus or database may come back
                log.warning("simulator step failed: %s: %s", type(exc).__name__, str(exc)[:200])
                await asyncio.sleep(min(5.0, tick * 10))
        return self.published
