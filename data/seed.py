"""Realistic demo data: municipalities, wards, one user per role, tickets.

Deterministic for a given ``random_seed`` and database state. Tickets are
drawn with numpy a column at a time and go in with PostgreSQL COPY (or
batched executemany on SQLite); docs/performance.md ("Seeding") has the
times.
"""
from __future__ import annotations

import hashlib
import json
import logging
import time
import random
import uuid
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Any, Iterator

import numpy as np
import pandas as pd
from sqlalchemy import Engine, insert, select
from sqlalchemy.orm import Session

from .errors import InvalidValue
from .models import Municipality, Role, Ticket, User, Ward
from .summaries import advance_marks
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
#: Tickets drawn at a time by _ticket_frames (memory: ~1 KB a ticket while a chunk is loaded).
TICKET_CHUNK = 200_000
#: The summaries' insert trigger and tables (migrations 0009, 0013), which a bulk load into an empty table builds once.
SUMMARY_INSERT_TRIGGER = "opsdash_summarise_insert"
SUMMARY_TABLES = ("ticket_summary_cells", "ticket_summary_days", "ticket_summary_deadlines",
                  "ticket_summary_responses", "ticket_summary_zones", "ticket_summary_marks",
                  "ticket_summary_ahead")
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
        as_text = engine.dialect.name == "postgresql"
        rows = (row for frame in _ticket_frames(rng.getrandbits(64), munis, tickets, now, sensitive_share, days)
                for row in _rows(frame, as_text))
        result.tickets = insert_tickets(engine, rows, rebuild_indexes=tickets >= BULK_LOAD_ROWS)
        # New municipalities' deadlines-ahead marks (migration 0013) to the current hour: the
        # figures' first read then has no hour bucket to subtract (a bulk load's build did it already).
        advance_marks(engine)
    return result


def _ticket_frames(
    random_seed: int | None, munis: list[tuple[uuid.UUID, str, list[str]]], count: int, now: datetime,
    sensitive_share: float, days: int, chunk: int = TICKET_CHUNK,
) -> Iterator[pd.DataFrame]:
    """``count`` tickets as DataFrames of ``TICKET_COLUMNS``, ``chunk`` rows each, drawn column by column.

    Ticket ``i`` belongs to municipality ``i % len(munis)``. Recent days are
    busier (age skews towards now); each ticket's status, response, resolution
    and escalation follow from its age and severity's SLA hours; a share
    ``sensitive_share`` is sensitive, mostly gbv with the flag, some gbv without
    it and some flagged tickets of another category, as real data has both
    mistakes. Drawn with numpy, a column at a time: about 50 times less CPU
    than a row at a time in Python, which capped seeding at ~20,000 rows/s
    (docs/performance.md, "Seeding"). Ids are unique per (municipality, i),
    so seeding again with the same ``random_seed`` adds new tickets.
    """
    rng = np.random.default_rng(random_seed)
    now_utc = pd.Timestamp(now).tz_convert("UTC")
    span_s = days * 86400.0
    # Per municipality: the first 8 bytes of every ticket id (version 4 set), its tracking prefix, its wards.
    heads = [np.frombuffer(hashlib.md5(m.bytes).digest()[:8], dtype=">u8")[0] & ~np.uint64(0xF000) | np.uint64(0x4000)
             for m, _, _ in munis]
    for start in range(0, count, chunk):
        n = min(chunk, count - start)
        i = np.arange(start, start + n, dtype=np.int64)
        muni = i % len(munis)
        sev = _draw(rng, SEVERITY_WEIGHTS, n)
        cat = _draw(rng, CATEGORY_WEIGHTS, n).astype(object)
        roll, kind = rng.random(n), rng.random(n)
        is_special = roll < sensitive_share
        cat[is_special & (kind < 0.9)] = "gbv"
        sensitive = is_special & ((kind < 0.8) | (kind >= 0.9))
        age_s = span_s * rng.random(n) ** 1.6
        age_h = age_s / 3600.0
        created = pd.Series(now_utc - pd.to_timedelta(age_s, unit="s"))
        response_h = pd.Series(sev).map(RESPONSE_HOURS).to_numpy(dtype=float)
        resolution_h = pd.Series(sev).map(RESOLUTION_HOURS).to_numpy(dtype=float)
        p_done = np.minimum(0.95, age_h / (resolution_h * 1.5))
        done = rng.random(n) < p_done
        closed = rng.random(n) < 0.35
        escalated = ~done & (rng.random(n) < 0.1)
        in_progress = ~done & ~escalated & (rng.random(n) < 0.55) & (age_h > 1)
        status = np.select([done & closed, done, escalated, in_progress],
                           ["closed", "resolved", "escalated", "in_progress"], "open").astype(object)
        responded = created + _hours(response_h * rng.uniform(0.05, 1.4, n))
        late = responded > now_utc
        instead = now_utc - pd.to_timedelta(rng.integers(1, 31, n), unit="m")
        responded = responded.where(~late, instead.where(instead > created, created)).where(status != "open")
        resolved = created + _hours(resolution_h * rng.uniform(0.1, 1.5, n))
        floor = responded.fillna(created)
        resolved = resolved.where(resolved > floor, floor).clip(upper=now_utc).where(done)
        escalate = (status == "escalated") | (done & (rng.random(n) < 0.05))
        escalated_at = (created + _hours(response_h * rng.uniform(0.5, 2, n))).clip(upper=now_utc).where(escalate)
        wards = np.array([w for _, _, ward_ids in munis for w in ward_ids], dtype=object).reshape(len(munis), -1)
        ward = wards[muni, rng.integers(0, wards.shape[1], n)]
        ward[rng.random(n) < 0.02] = None
        description = np.empty(n, dtype=object)
        pick = rng.random(n)
        for category, texts in DESCRIPTIONS.items():
            mine = cat == category
            description[mine] = np.array(texts, dtype=object)[(pick[mine] * len(texts)).astype(int)]
        address = (pd.Series(rng.integers(1, 1000, n)).astype(str) + " "
                   + pd.Series(np.array(STREETS, dtype=object)[rng.integers(0, len(STREETS), n)]))
        tail = (i.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)) & ~np.uint64(0xC000 << 48) | np.uint64(0x8000 << 48)
        head = np.array(heads, dtype=np.uint64)[muni]
        codes = np.array([code for _, code, _ in munis], dtype=object)[muni]
        frame = pd.DataFrame({
            "id": [f"{h:016x}{t:016x}" for h, t in zip(head.tolist(), tail.tolist())],
            "tenant_id": np.array([str(m) for m, _, _ in munis], dtype=object)[muni],
            "ward_id": ward,
            "tracking_number": codes + "-" + _digits(created.dt.year % 100 * 100 + created.dt.month, 4) + "-"
            + _digits(i, 7),
            "category": cat, "status": status, "severity": sev, "description": description,
            "address": address.to_numpy(dtype=object), "language": _draw(rng, LANGUAGE_WEIGHTS, n),
            "is_sensitive": sensitive, "created_at": created,
            "sla_response_deadline": created + _hours(response_h),
            "sla_resolution_deadline": created + _hours(resolution_h),
            "first_responded_at": responded, "resolved_at": resolved, "escalated_at": escalated_at,
            "assigned_to": None,
        })
        frame["updated_at"] = frame[["created_at", "first_responded_at", "resolved_at", "escalated_at"]].max(axis=1)
        yield frame


def _draw(rng: np.random.Generator, weights: dict[str, int], n: int) -> np.ndarray:
    """``n`` keys of ``weights`` drawn with those weights."""
    keys = np.array(list(weights), dtype=object)
    p = np.array(list(weights.values()), dtype=float)
    return keys[rng.choice(len(keys), size=n, p=p / p.sum())]


def _hours(h: np.ndarray) -> pd.TimedeltaIndex:
    return pd.to_timedelta(h * 3600.0, unit="s")


def _digits(values, width: int) -> np.ndarray:
    """Non-negative integers as zero-padded decimal strings (an object array)."""
    return pd.Series(values).astype(str).str.zfill(width).to_numpy(dtype=object)

#: Ticket columns holding a time (UTC).
_TIME_COLUMNS = ("created_at", "sla_response_deadline", "sla_resolution_deadline", "first_responded_at",
                 "resolved_at", "escalated_at", "updated_at")


def _rows(frame: pd.DataFrame, as_text: bool) -> Iterator[tuple]:
    """The tickets of ``frame`` as ``TICKET_COLUMNS`` tuples: text as COPY reads it, or Python values.

    Text skips building a Python object per value (a datetime is ~30 times the
    cost of its ISO string made by numpy), which COPY would only turn back into text.
    """
    columns = []
    for name in TICKET_COLUMNS:
        values = frame[name]
        if name in _TIME_COLUMNS:
            if as_text:
                times = values.to_numpy(dtype="datetime64[us]")
                text = np.datetime_as_string(times, unit="us", timezone="UTC").astype(object)
                text[np.isnat(times)] = None
                columns.append(text.tolist())
            else:
                columns.append([None if pd.isna(t) else t.to_pydatetime() for t in values.dt.floor("us")])
        elif name in ("id", "tenant_id") and not as_text:
            columns.append([uuid.UUID(v) for v in values])
        elif name == "is_sensitive":
            columns.append(values.tolist() if not as_text else np.where(values.to_numpy(), "t", "f").tolist())
        else:
            columns.append([None if v is None or v != v else v for v in values.to_numpy(dtype=object).tolist()])
    return zip(*columns)


def insert_tickets(engine: Engine, rows, batch_size: int = 10_000, *, rebuild_indexes: bool = False) -> int:
    """Bulk-insert ticket tuples in ``TICKET_COLUMNS`` order. Returns the count.

    ``rebuild_indexes`` (PostgreSQL, large loads): when the tickets table is
    empty at the start of the load, drop its indexes (all but the primary
    key's), COPY, and build them again, all in one transaction. Maintaining
    them row by row makes COPY several times slower than one sort each
    afterwards (GIN trigram indexes above all: 2.5x on their own;
    docs/performance.md, "Seeding"). The price: DROP INDEX locks the tickets
    table (reads included) until the load commits. On a fresh database nobody
    is waiting for it; on a table that already has rows, dashboards may be
    reading it, so the indexes are kept and maintained row by row (slower, and
    COPY's lock lets reads go on). Emptiness is checked in the load's own
    transaction. A crash rolls everything back, indexes included. The
    summary tables (migrations 0009, 0013) are treated the same way: into an
    empty table, their insert trigger is off during the COPY and they are
    counted once afterwards (``opsdash_summaries_build()``, which also moves
    the deadlines-ahead marks to the current hour).
    """
    count = 0
    if engine.dialect.name == "postgresql":
        raw = engine.raw_connection()
        try:
            with raw.cursor() as cur:
                definitions: list[str] = []
                rebuild = rebuild_indexes and not _has_tickets(cur)
                if rebuild_indexes and not rebuild:
                    log.info("the tickets table has rows: keeping its search indexes during the load "
                             "(slower, but dashboards can keep reading)")
                summarise = rebuild and _has_summaries(cur)
                if rebuild:
                    # Every index but the constraints' (the primary key): one sort each afterwards,
                    # in memory, instead of a random insert into each per row.
                    cur.execute("SET LOCAL maintenance_work_mem = '512MB'")
                    cur.execute("SELECT i.indexrelid::regclass::text, pg_get_indexdef(i.indexrelid) FROM pg_index i "
                                "WHERE i.indrelid = 'tickets'::regclass AND NOT EXISTS "
                                "(SELECT 1 FROM pg_constraint c WHERE c.conindid = i.indexrelid)")
                    for name, definition in cur.fetchall():
                        cur.execute(f"DROP INDEX {name}")
                        definitions.append(definition)
                if summarise:
                    # Likewise the summaries (migration 0009): counted once after the load rather than
                    # by the insert trigger over a transition table of every row (docs/performance.md).
                    cur.execute(f"ALTER TABLE tickets DISABLE TRIGGER {SUMMARY_INSERT_TRIGGER}")
                step = _Steps()
                with cur.copy(f"COPY tickets ({', '.join(TICKET_COLUMNS)}) FROM STDIN") as copy:
                    for row in rows:
                        copy.write_row(row)
                        count += 1
                step.done(f"{count:,} tickets copied")
                for definition in definitions:
                    cur.execute(definition)
                if definitions:
                    step.done(f"{len(definitions)} indexes built")
                if summarise:
                    cur.execute(f"ALTER TABLE tickets ENABLE TRIGGER {SUMMARY_INSERT_TRIGGER}")
                    cur.execute("SELECT opsdash_summaries_build()")
                    step.done("summaries built")
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
                    if _has_summaries(cur):  # those of the schema's revision (0013's since 0013)
                        cur.execute("SELECT t FROM unnest(%s::text[]) AS t WHERE to_regclass(t) IS NOT NULL",
                                    (list(SUMMARY_TABLES),))
                        cur.execute(f"ANALYZE {', '.join(t for (t,) in cur.fetchall())}")
                step.done("vacuumed and analysed")
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


class _Steps:
    """Logs each step of a long load with its seconds (the seed command shows them as progress)."""

    def __init__(self) -> None:
        self._last = time.perf_counter()

    def done(self, what: str) -> None:
        now = time.perf_counter()
        log.info("%s in %.1f s", what, now - self._last)
        self._last = now


def _has_summaries(cur) -> bool:
    cur.execute("SELECT to_regprocedure('opsdash_summaries_build()') IS NOT NULL")
    return bool(cur.fetchone()[0])


def _has_tickets(cur) -> bool:
    cur.execute("SELECT EXISTS (SELECT 1 FROM tickets)")
    return bool(cur.fetchone()[0])
