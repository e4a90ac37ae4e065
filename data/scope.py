"""Scope: who may see what. The one gate every ticket read goes through.

A Scope is built on the server from the signed-in user's database record
(``scope_for_user``), never from anything a browser sends. It carries the
municipality, the role and, for a ward councillor, the ward; ``tickets.py``
turns it into the WHERE clause that every read starts with.
"""
from __future__ import annotations

import uuid
from dataclasses import dataclass
from zoneinfo import ZoneInfo

from sqlalchemy import Engine, select
from sqlalchemy.exc import OperationalError, ProgrammingError
from sqlalchemy.orm import Session

from .db import has_data, no_data
from .errors import NotAuthorized
from .models import DASHBOARD_ROLES, Municipality, Role, User
from .sensitivity import name_key
from .settings import DEFAULT_TIMEZONE


def _as_uuid(value: uuid.UUID | str) -> uuid.UUID:
    if isinstance(value, uuid.UUID):
        return value
    try:
        return uuid.UUID(str(value))
    except ValueError:
        raise NotAuthorized(f"not a municipality id: {value!r}") from None


@dataclass(frozen=True)
class Scope:
    """What one staff member may see. Immutable; invalid scopes cannot exist.

    - admin / manager: the whole municipality (``ward_id`` is always None).
    - ward_councillor: only ``ward_id`` of the municipality; a councillor
      without a ward is refused (fail closed).
    - any other role: NotAuthorized at construction.
    """

    municipality_id: uuid.UUID
    role: Role
    ward_id: str | None = None
    username: str | None = None
    municipality_name: str = ""
    municipality_slug: str = ""
    timezone: str = DEFAULT_TIMEZONE

    def __post_init__(self) -> None:
        object.__setattr__(self, "municipality_id", _as_uuid(self.municipality_id))
        try:
            role = Role(self.role)
        except ValueError:
            raise NotAuthorized(f"unknown role {self.role!r}") from None
        object.__setattr__(self, "role", role)
        if role not in DASHBOARD_ROLES:
            raise NotAuthorized(
                f"the {role.value.replace('_', ' ')} role has no access to the operations dashboard"
            )
        if role is Role.WARD_COUNCILLOR:
            # Blank as the sensitivity rule sees text (invisible characters too), as the
            # database's row-level security decides it (opsdash_key, migration 0007).
            if not self.ward_id or not name_key(str(self.ward_id)):
                raise NotAuthorized("this ward councillor account has no ward assigned; ask an administrator")
            object.__setattr__(self, "ward_id", str(self.ward_id))
        else:
            # Whole-municipality roles are never narrowed by a stray ward value.
            object.__setattr__(self, "ward_id", None)
        try:
            ZoneInfo(self.timezone)
        except Exception:
            object.__setattr__(self, "timezone", DEFAULT_TIMEZONE)

    @property
    def is_councillor(self) -> bool:
        return self.role is Role.WARD_COUNCILLOR

    @property
    def sees_whole_municipality(self) -> bool:
        return not self.is_councillor

    @property
    def tzinfo(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    def allows_ward(self, ward_id: str | None) -> bool:
        """Whether an item of ``ward_id`` (None: no ward) is visible here.

        Fail closed: an item without a ward never reaches a councillor.
        """
        if self.sees_whole_municipality:
            return True
        return ward_id is not None and str(ward_id) == self.ward_id

    def describe(self) -> str:
        where = self.municipality_name or str(self.municipality_id)
        if self.is_councillor:
            return f"{where}, ward {self.ward_id}"
        return where


def scope_from_records(user: User, municipality: Municipality) -> Scope:
    if not user.is_active:
        raise NotAuthorized("this account is disabled")
    if user.municipality_id != municipality.id:
        raise NotAuthorized("user and municipality do not match")
    return Scope(
        municipality_id=municipality.id,
        role=user.role,
        ward_id=user.ward_id,
        username=user.username,
        municipality_name=municipality.name,
        municipality_slug=municipality.slug,
        timezone=municipality.timezone or DEFAULT_TIMEZONE,
    )


def scope_for_user(engine: Engine, username: str) -> Scope:
    """The Scope of ``username`` from the users table. NotAuthorized if none.

    A database without OpsDash data (a fresh clone, a wrong URL) raises ConfigError, one sentence
    naming the command to run, not SQL. It is checked only when the lookup fails: no cost per page.
    """
    try:
        with Session(engine) as session:
            row = session.execute(
                select(User, Municipality)
                .join(Municipality, Municipality.id == User.municipality_id)
                .where(User.username == username)
            ).first()
    except (OperationalError, ProgrammingError):  # SQLite's "no such table", PostgreSQL's UndefinedTable
        if not has_data(engine):
            raise no_data(engine.url) from None
        raise
    if row is None:
        if not has_data(engine):
            raise no_data(engine.url)
        raise NotAuthorized("unknown user")
    return scope_from_records(row[0], row[1])
