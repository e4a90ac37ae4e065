"""ORM models (SQLAlchemy 2, typed).

``tickets`` keeps the ticketing system's column names (docs/architecture.md, "Interfaces others rely on") so
OpsDash can read that system's database directly. Enumerated values are
stored as plain strings: the ticketing system may add a category before we
do, and a row we cannot classify must still load (the Scope excludes it from
nothing but sensitive data).
"""
from __future__ import annotations

import enum
import uuid
from datetime import datetime, timezone

from sqlalchemy import (
    Boolean,
    Computed,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    TypeDecorator,
    Uuid,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from .sensitivity import DEFAULT_CATEGORIES, SENSITIVE_KEY


class Role(str, enum.Enum):
    ADMIN = "admin"
    MANAGER = "manager"
    WARD_COUNCILLOR = "ward_councillor"
    FIELD_WORKER = "field_worker"
    CITIZEN = "citizen"


DASHBOARD_ROLES = frozenset({Role.ADMIN, Role.MANAGER, Role.WARD_COUNCILLOR})


class Category(str, enum.Enum):
    WATER = "water"
    ELECTRICITY = "electricity"
    ROADS = "roads"
    WASTE = "waste"
    SANITATION = "sanitation"
    STREETLIGHTS = "streetlights"
    PARKS = "parks"
    HOUSING = "housing"
    OTHER = "other"
    GBV = "gbv"  # sensitive: never shown anywhere in OpsDash


#: The ticketing system's categories a staff member may see (more can be added: ``KnownCategory``).
VISIBLE_CATEGORIES: tuple[str, ...] = DEFAULT_CATEGORIES
SENSITIVE_CATEGORY = SENSITIVE_KEY


class Status(str, enum.Enum):
    OPEN = "open"
    IN_PROGRESS = "in_progress"
    ESCALATED = "escalated"
    RESOLVED = "resolved"
    CLOSED = "closed"


OPEN_STATUSES: tuple[str, ...] = (Status.OPEN.value, Status.IN_PROGRESS.value, Status.ESCALATED.value)


class Severity(str, enum.Enum):
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"
    CRITICAL = "critical"


class Language(str, enum.Enum):
    EN = "en"
    ZU = "zu"
    XH = "xh"
    AF = "af"
    ST = "st"
    TN = "tn"
    NSO = "nso"
    TS = "ts"
    SS = "ss"
    VE = "ve"
    NR = "nr"


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware datetimes in and out, stored as UTC on every backend.

    SQLite has no time zones: values are stored as naive UTC there and come
    back aware. A naive datetime is refused rather than guessed at.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given where a timezone-aware one is required")
        value = value.astimezone(timezone.utc)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=timezone.utc)
        return value.astimezone(timezone.utc)


class Base(DeclarativeBase):
    pass


class Municipality(Base):
    __tablename__ = "municipalities"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    name: Mapped[str] = mapped_column(String(200))
    slug: Mapped[str] = mapped_column(String(100), unique=True)
    timezone: Mapped[str] = mapped_column(String(64), default="Africa/Johannesburg")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Ward(Base):
    __tablename__ = "wards"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    municipality_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("municipalities.id", ondelete="CASCADE"), index=True)
    number: Mapped[int] = mapped_column(Integer)
    name: Mapped[str] = mapped_column(String(200))


class User(Base):
    __tablename__ = "users"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    username: Mapped[str] = mapped_column(String(150), unique=True)
    email: Mapped[str | None] = mapped_column(String(254), unique=True, nullable=True)
    password_hash: Mapped[str | None] = mapped_column(String(255), nullable=True)
    role: Mapped[str] = mapped_column(String(32))
    municipality_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("municipalities.id", ondelete="CASCADE"), index=True)
    ward_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    is_active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Ticket(Base):
    __tablename__ = "tickets"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    tenant_id: Mapped[uuid.UUID] = mapped_column(Uuid)
    ward_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    tracking_number: Mapped[str] = mapped_column(String(64))
    category: Mapped[str] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(32), default=Status.OPEN.value)
    severity: Mapped[str] = mapped_column(String(16), default=Severity.MEDIUM.value)
    description: Mapped[str] = mapped_column(Text, default="")
    address: Mapped[str | None] = mapped_column(Text, nullable=True)
    language: Mapped[str] = mapped_column(String(8), default=Language.EN.value)
    is_sensitive: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    sla_response_deadline: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    sla_resolution_deadline: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    first_responded_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    resolved_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    escalated_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    # Beyond the ticketing system's columns: nullable, so its rows load as they are.
    assigned_to: Mapped[str | None] = mapped_column(String(150), nullable=True)
    updated_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True, default=utcnow)
    # Kept by the database (migration 0003): what free-text search matches, lower-cased.
    # Never written by us, never shown; deferred so loading a Ticket does not fetch it.
    search_text: Mapped[str | None] = mapped_column(
        Text, Computed("lower(coalesce(tracking_number, '') || chr(31) || coalesce(description, '') || chr(31) "
                       "|| coalesce(address, ''))"), deferred=True)

    # Kept by the database (migration 0006): the category as the sensitivity rule compares
    # it (data.sensitivity). Reads show and filter by it; never written by us.
    category_key: Mapped[str | None] = mapped_column(Text, Computed("opsdash_key(category)"))

    __table_args__ = (
        # Every dashboard read starts with tenant (+ ward for councillors) and a
        # created_at range or order; these serve those shapes.
        Index("ix_tickets_tenant_created", "tenant_id", "created_at"),
        Index("ix_tickets_tenant_ward_created", "tenant_id", "ward_id", "created_at"),
        Index("ix_tickets_tenant_status", "tenant_id", "status"),
        Index("ix_tickets_tenant_category_key", "tenant_id", "category_key"),
        Index("ix_tickets_tracking_number", "tracking_number", unique=True),
    )


class KnownCategory(Base):
    """A category that may be shown (docs/architecture.md, invariant 1: every other category is sensitive).

    Migration 0006 fills it with the ticketing system's categories; an admin adds
    more on purpose (``opsdash category add``). The database refuses ``gbv``.
    """

    __tablename__ = "ticket_categories"

    key: Mapped[str] = mapped_column(String(32), primary_key=True)
    added_by: Mapped[str | None] = mapped_column(String(150), nullable=True)
    added_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class ExportAudit(Base):
    __tablename__ = "export_audit"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    username: Mapped[str] = mapped_column(String(150))
    municipality_id: Mapped[uuid.UUID] = mapped_column(Uuid)
    ward_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    format: Mapped[str] = mapped_column(String(8))
    filters: Mapped[str] = mapped_column(Text)  # JSON of TicketFilters.to_dict()
    row_count: Mapped[int] = mapped_column(Integer)
    duration_ms: Mapped[int] = mapped_column(Integer)
    channel: Mapped[str] = mapped_column(String(16), default="ui")  # ui | http | cli | api
    # ok | failed (migration 0011): a failed export is written down too, and no file was delivered.
    outcome: Mapped[str] = mapped_column(String(16), default="ok", server_default="ok")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
