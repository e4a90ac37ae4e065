"""Realistic demo data: municipalities, wards, one user per role, tickets.

Deterministic for a given ``random_seed`` and database state. Tickets go in
with PostgreSQL COPY (or batched executemany on SQLite); a million rows take
one to two minutes on 2 cores (docs/performance.md, "Seeding").
"""
from __future__ import annotations

import hashlib
import itertools
import json
import logging
import random
import uuid
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Iterator

from sqlalchemy import Engine, insert, select
from sqlalchemy.orm import Session

from .errors import InvalidValue
from .models import Municipality, Role, Ticket, User, Ward
from .users import hash_password

log = logging.getLogger("opsdash.seed")

_NAMESPACE = uuid.UUID("6f1c1c2e-5b7a-4c55-9a37-0d0a5e3c2b11")

MUNICIPALITIES = [
    ("eThekwini Metropolitan Municipality", "ethekwini", "ETH"),
    ("City of Tshwane", "tshwane", "TSH"),
    ("Buffalo City Metropolitan Municipality", "buffalo-city", "BUF"),
    ("Mangaung Metropolitan Municipality", "mangaung", "MAN"),
    ("Msunduzi Local Municipality", "msunduzi", "MSU"),
    ("Polokwane Local Municipality", "polokwane", "POL"),
    ("Nelson Mandela Bay Metropolitan Municipality", "nelson-mandela-bay", "NMA"),
    ("City of Mbombela", "mbombela", "MBO"),
]
CATEGORY_WEIGHTS = {
    "water": 24, "electricity": 22, "roads": 15, "waste": 12, "sanitation": 10,
    "streetlights": 7, "housing": 4, "parks": 3, "other": 3,
}
SEVERITY_WEIGHTS = {"low": 30, "medium": 45, "high": 20, "critical": 5}
LANGUAGE_WEIGHTS = {"en": 40, "zu": 20, "xh": 12, "af": 10, "st": 8, "tn": 5, "nso": 5}
RESPONSE_HOURS = {"critical": 4, "high": 12, "medium": 24, "low": 72}
RESOLUTION_HOURS = {"critical": 24, "high": 72, "medium": 168, "low": 336}
DESCRIPTIONS = {
    "water": ["No water supply since this morning", "Burst pipe flooding the street", "Low water pressure in the whole block",
              "Amanzi awekho kusukela izolo", "Geen water nie sedert gisteraand", "Water meter leaking at the gate"],
    "electricity": ["Power outage affecting several houses", "Transformer sparking near the school",
                    "Ugesi uphelile endaweni yonke", "Krag is af in die hele straat", "Illegal connections causing trips"],
    "roads": ["Large pothole on the main road", "Traffic light not working at the intersection",
              "Umgwaqo unemigodi emikhulu", "Stormwater drain blocked, road flooded"],
    "waste": ["Refuse not collected for two weeks", "Illegal dumping next to the park", "Imfucuza ayithathwanga",
              "Vullis is nie opgetel nie"],
    "sanitation": ["Sewage overflowing into the street", "Blocked sewer line", "Indlu yangasese igcwele",
                   "Rioolpyp gebars"],
    "streetlights": ["Streetlight out for a week", "Several streetlights flickering", "Izibani zasemgwaqweni azisebenzi"],
    "housing": ["Roof damaged after the storm", "RDP house cracked walls"],
    "parks": ["Playground equipment broken", "Grass not cut at the sports field"],
    "other": ["Stray animals on the road", "Noise complaint about a tavern"],
    "gbv": ["[sensitive report]"],
}
STREETS = ["Main Road", "Church Street", "Umgeni Road", "Nelson Mandela Drive", "Voortrekker Road", "Oxford Street",
           "Jabu Ndlovu Street", "Steve Biko Road", "Market Street", "Station Road", "Vilakazi Street", "Long Street"]
WORDS = ["river", "maize", "baobab", "kudu", "protea", "karoo", "summit", "harbour", "indaba", "ubuntu", "lekker",
         "thunder", "jacaranda", "springbok", "marula", "delta"]
#: From this many tickets on, seed() into an empty tickets table rebuilds the search indexes after the load
#: instead of maintaining them (insert_tickets explains the trade).
BULK_LOAD_ROWS = 100_000
#: The summaries' insert trigger and tables (migration 0009), which a bulk load into an empty table builds once.
SUMMARY_INSERT_TRIGGER = "opsdash_summarise_insert"
SUMMARY_TABLES = ("ticket_summary_cells", "ticket_summary_days", "ticket_summary_deadlines",
                  "ticket_summary_responses", "ticket_summary_zones")
TICKET_COLUMNS = (
    "id", "tenant_id", "ward_id", "tracking_number", "category", "status", "severity", "description", "address",
    "language", "is_sensitive", "created_at", "sla_response_deadline", "sla_resolution_deadline",
    "first_responded_at", "resolved_at", "escalated_at", "assigned_to", "updated_at",
)


@dataclass
class SeedResult:
    municipalities: list[dict[str, Any]] = field(default_factory=list)
    users: list[dict[str, Any]] = field(default_factory=list)
    tickets: int = 0

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)


def _weighted(rng: random.Random, weights: dict[str, int]):
    # Cumulative weights once, not per call: the same draws as choices(keys, weights), ~20% less seeding CPU.
    keys, cumulative = list(weights), list(itertools.accumulate(weights.values()))
    return lambda: rng.choices(keys, cum_weights=cumulative)[0]


def _password(rng: random.Random) -> str:
    return f"{rng.choice(WORDS)}-{rng.choice(WORDS)}-{rng.randint(1000, 9999)}"


def _free_slug(session: Session, slug: str, code: str) -> tuple[str, str, int]:
    taken = set(session.execute(select(Municipality.slug)).scalars())
    n = 1
    while (slug if n == 1 else f"{slug}-{n}") in taken:
        n += 1
    return (slug if n == 1 else f"{slug}-{n}"), (code if n == 1 else f"{code}{n}"), n


def seed(
    engine: Engine,
    *,
    tickets: int = 3000,
    wards: int = 8,
    municipalities: int = 2,
    random_seed: int | None = None,
    now: datetime | None = None,
    sensitive_share: float = 0.03,
    days: int = 120,
) -> SeedResult:
    """Add ``municipalities`` new municipalities with wards, users and ``tickets`` tickets in total."""
    if not 0 <= tickets <= 50_000_000:
        raise InvalidValue("--tickets must be between 0 and 50,000,000")
    if not 1 <= wards <= 500:
        raise InvalidValue("--wards must be between 1 and 500")
    if not 1 <= municipalities <= 50:
        raise InvalidValue("--municipalities must be between 1 and 50")
    rng = random.Random(random_seed)
    now = now or datetime.now(timezone.utc)
    result = SeedResult()
    munis: list[tuple[uuid.UUID, str, list[str]]] = []
    with Session(engine) as session:
        for m in range(municipalities):
            name, slug, code = MUNICIPALITIES[m % len(MUNICIPALITIES)]
            slug, code, n = _free_slug(session, slug, code)
            if n > 1:
                name = f"{name} ({n})"
            muni_id = uuid.uuid5(_NAMESPACE, f"{slug}:{random_seed}")
            session.add(Municipality(id=muni_id, name=name, slug=slug, timezone="Africa/Johannesburg"))
            ward_ids = [f"{code}-W{w:03d}" for w in range(1, wards + 1)]
            for number, ward_id in enumerate(ward_ids, start=1):
                session.add(Ward(id=ward_id, municipality_id=muni_id, number=number, name=f"Ward {number}"))
            session.flush()
            people: list[tuple[str, str, str | None]] = [
                (f"admin.{slug}", Role.ADMIN.value, None),
                (f"manager.{slug}", Role.MANAGER.value, None),
                (f"fieldworker.{slug}", Role.FIELD_WORKER.value, ward_ids[0]),
                (f"citizen.{slug}", Role.CITIZEN.value, None),
            ] + [(f"councillor.{slug}.w{i:02d}", Role.WARD_COUNCILLOR.value, w) for i, w in enumerate(ward_ids, 1)]
            for username, role, ward_id in people:
                password = _password(rng)
                session.add(User(
                    username=username, email=f"{username}@example.org", password_hash=hash_password(password),
                    role=role, municipality_id=muni_id, ward_id=ward_id,
                ))
                result.users.append({"username": username, "password": password, "role": role,
                                     "municipality_id": str(muni_id), "ward_id": ward_id})
            munis.append((muni_id, code, ward_ids))
            result.municipalities.append({"id": str(muni_id), "name": name, "wards": ward_ids})
        session.commit()
    if tickets:
        rows = _ticket_rows(rng, munis, tickets, now, sensitive_share, days)
        result.tickets = insert_tickets(engine, rows, rebuild_search_indexes=tickets >= BULK_LOAD_ROWS)
    return result


def _ticket_rows(
    rng: random.Random, munis: list[tuple[uuid.UUID, str, list[str]]], count: int, now: datetime,
    sensitive_share: float, days: int,
) -> Iterator[tuple]:
    category = _weighted(rng, CATEGORY_WEIGHTS)
    severity_of = _weighted(rng, SEVERITY_WEIGHTS)
    language = _weighted(rng, LANGUAGE_WEIGHTS)
    span = days * 86400.0
    for i in range(count):
        muni_id, code, ward_ids = munis[i % len(munis)]
        # Recent days are busier: age skews towards now.
        age = span * (rng.random() ** 1.6)
        created = now - timedelta(seconds=age)
        sev = severity_of()
        cat = category()
        sensitive = False
        roll = rng.random()
        if roll < sensitive_share:
            kind = rng.random()
            # Mostly gbv with the flag; some gbv without it and some flagged
            # tickets of another category, as real data has both mistakes.
            if kind < 0.8:
                cat, sensitive = "gbv", True
            elif kind < 0.9:
                cat = "gbv"
            else:
                sensitive = True
        response_deadline = created + timedelta(hours=RESPONSE_HOURS[sev])
        resolution_deadline = created + timedelta(hours=RESOLUTION_HOURS[sev])
        age_h = age / 3600.0
        first_responded = resolved = escalated = None
        p_done = min(0.95, age_h / (RESOLUTION_HOURS[sev] * 1.5))
        if rng.random() < p_done:
            status = "closed" if rng.random() < 0.35 else "resolved"
        elif rng.random() < 0.1:
            status = "escalated"
        elif rng.random() < 0.55 and age_h > 1:
            status = "in_progress"
        else:
            status = "open"
        if status != "open":
            first_responded = created + timedelta(hours=RESPONSE_HOURS[sev] * rng.uniform(0.05, 1.4))
            if first_responded > now:
                first_responded = now - timedelta(minutes=rng.randint(1, 30))
                first_responded = max(first_responded, created)
        if status in ("resolved", "closed"):
            resolved = created + timedelta(hours=RESOLUTION_HOURS[sev] * rng.uniform(0.1, 1.5))
            resolved = min(max(resolved, first_responded or created), now)
        if status == "escalated" or (status in ("resolved", "closed") and rng.random() < 0.05):
            escalated = created + timedelta(hours=RESPONSE_HOURS[sev] * rng.uniform(0.5, 2))
            escalated = min(escalated, now)
        ward_id = None if rng.random() < 0.02 else rng.choice(ward_ids)
        ticket_id = uuid.UUID(bytes=hashlib.md5(muni_id.bytes + i.to_bytes(8, "big")).digest(), version=4)
        description = rng.choice(DESCRIPTIONS[cat])
        address = f"{rng.randint(1, 999)} {rng.choice(STREETS)}"
        updated = max(t for t in (created, first_responded, resolved, escalated) if t is not None)
        yield (
            ticket_id, muni_id, ward_id, f"{code}-{created:%y%m}-{i:07d}", cat, status, sev, description,
            address, language(), sensitive, created, response_deadline, resolution_deadline,
            first_responded, resolved, escalated, None, updated,
        )


def insert_tickets(engine: Engine, rows, batch_size: int = 10_000, *, rebuild_search_indexes: bool = False) -> int:
    """Bulk-insert ticket tuples in ``TICKET_COLUMNS`` order. Returns the count.

    ``rebuild_search_indexes`` (PostgreSQL, large loads): when the tickets
    table is empty at the start of the load, drop the trigram search indexes,
    COPY, and build them again, all in one transaction. Maintaining GIN
    trigram indexes row by row makes COPY about 2.5 times slower than
    building them once afterwards (docs/performance.md, "Seeding"). The
    price: DROP INDEX locks the tickets table (reads included) until the
    load commits. On a fresh database nobody is waiting for it; on a table
    that already has rows, dashboards may be reading it, so the indexes are
    kept and maintained row by row (slower, and COPY's lock lets reads go
    on). Emptiness is checked in the load's own transaction. A crash rolls
    everything back, indexes included. The summary tables (migration 0009)
    are treated the same way: into an empty table, their insert trigger is
    off during the COPY and they are counted once afterwards.
    """
    count = 0
    if engine.dialect.name == "postgresql":
        raw = engine.raw_connection()
        try:
            with raw.cursor() as cur:
                definitions: list[str] = []
                rebuild = rebuild_search_indexes and not _has_tickets(cur)
                if rebuild_search_indexes and not rebuild:
                    log.info("the tickets table has rows: keeping its search indexes during the load "
                             "(slower, but dashboards can keep reading)")
                summarise = rebuild and _has_summaries(cur)
                if rebuild:
                    cur.execute("SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'tickets' "
                                r"AND indexname LIKE '%\_trgm' AND schemaname = current_schema()")
                    for name, definition in cur.fetchall():
                        cur.execute(f'DROP INDEX "{name}"')
                        definitions.append(definition)
                if summarise:
                    # Likewise the summaries (migration 0009): counted once after the load rather than
                    # by the insert trigger over a transition table of every row (docs/performance.md).
                    cur.execute(f"ALTER TABLE tickets DISABLE TRIGGER {SUMMARY_INSERT_TRIGGER}")
                with cur.copy(f"COPY tickets ({', '.join(TICKET_COLUMNS)}) FROM STDIN") as copy:
                    for row in rows:
                        copy.write_row(row)
                        count += 1
                for definition in definitions:
                    cur.execute(definition)
                if summarise:
                    cur.execute(f"ALTER TABLE tickets ENABLE TRIGGER {SUMMARY_INSERT_TRIGGER}")
                    cur.execute("SELECT opsdash_summaries_build()")
            raw.commit()
            # Fresh statistics: until autovacuum gets to it, the planner would take a
            # million new rows for a few thousand and pick plans for that (the export's
            # COPY: 2.9x slower with the stale estimate, measured). VACUUM as well: it
            # marks the new pages all-visible, without which the median's index-only
            # scans (migration 0004) would read the table row by row. Outside a
            # transaction, as VACUUM must be; the connection goes back to the pool as it came.
            raw.driver_connection.autocommit = True
            try:
                with raw.cursor() as cur:
                    cur.execute("VACUUM (ANALYZE) tickets")
                    if _has_summaries(cur):
                        cur.execute(f"ANALYZE {', '.join(SUMMARY_TABLES)}")
            finally:
                raw.driver_connection.autocommit = False
        finally:
            raw.close()
        return count
    batch: list[dict[str, Any]] = []
    with engine.begin() as conn:
        for row in rows:
            batch.append(dict(zip(TICKET_COLUMNS, row)))
            if len(batch) >= batch_size:
                conn.execute(insert(Ticket), batch)
                count += len(batch)
                batch = []
        if batch:
            conn.execute(insert(Ticket), batch)
            count += len(batch)
    return count


def _has_summaries(cur) -> bool:
    cur.execute("SELECT to_regprocedure('opsdash_summaries_build()') IS NOT NULL")
    return bool(cur.fetchone()[0])


def _has_tickets(cur) -> bool:
    cur.execute("SELECT EXISTS (SELECT 1 FROM tickets)")
    return bool(cur.fetchone()[0])
