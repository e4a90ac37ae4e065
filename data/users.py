"""Accounts: creation, argon2 password hashes, verification."""
from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from functools import lru_cache

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from argon2.profiles import CHEAPEST, RFC_9106_LOW_MEMORY
from sqlalchemy import Engine, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from .errors import InvalidValue, NotFound
from .models import Municipality, Role, User, Ward
from .settings import current_settings


@lru_cache(maxsize=1)
def _password_hashing() -> tuple[PasswordHasher, str]:
    """The hasher and a hash to verify against when the username is unknown.

    Argon2id, RFC 9106 low-memory profile (64 MiB, t=3); the cheapest profile when
    OPSDASH_FAST_PASSWORD_HASH is set (tests and benchmarks seeding hundreds of users).
    Made on first use, not at import: the profile is a setting, read with the others.
    The dummy hash is made with the hasher, so that a miss costs the same time as a
    wrong password from the first request on (no user enumeration by timing).
    """
    hasher = PasswordHasher.from_parameters(CHEAPEST if current_settings().fast_password_hash else RFC_9106_LOW_MEMORY)
    return hasher, hasher.hash("opsdash-dummy-password")


USERNAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@\-]{1,149}$")
MIN_PASSWORD_LENGTH = 8


def hash_password(password: str) -> str:
    if not isinstance(password, str) or len(password) < MIN_PASSWORD_LENGTH:
        raise InvalidValue(f"a password needs at least {MIN_PASSWORD_LENGTH} characters")
    return _password_hashing()[0].hash(password)


def verify_password(password_hash: str | None, password: str) -> bool:
    if not password_hash:
        _safe_verify(_password_hashing()[1], password)
        return False
    return _safe_verify(password_hash, password)


def _safe_verify(password_hash: str, password: str) -> bool:
    try:
        return _password_hashing()[0].verify(password_hash, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


@dataclass(frozen=True)
class Account:
    """What the sign-in and CLI code need of a user, detached from any Session."""

    username: str
    role: str
    municipality_id: uuid.UUID
    ward_id: str | None
    email: str | None
    is_active: bool


def _account(user: User) -> Account:
    return Account(user.username, user.role, user.municipality_id, user.ward_id, user.email, user.is_active)


def authenticate(engine: Engine, username: str, password: str) -> Account | None:
    """The account if ``password`` is right and the account active, else None.

    Same answer and about the same time for an unknown user, a wrong
    password and a disabled account.
    """
    if not isinstance(username, str) or not isinstance(password, str) or len(username) > 150 or len(password) > 1024:
        verify_password(None, "x")
        return None
    with Session(engine) as session:
        user = session.execute(select(User).where(User.username == username)).scalar_one_or_none()
        if user is None:
            verify_password(None, password)
            return None
        ok = verify_password(user.password_hash, password)
        if ok and _password_hashing()[0].check_needs_rehash(user.password_hash or ""):
            user.password_hash = _password_hashing()[0].hash(password)
            session.commit()
        if not ok or not user.is_active:
            return None
        return _account(user)


def find_account(engine: Engine, *, username: str | None = None, email: str | None = None) -> Account | None:
    with Session(engine) as session:
        stmt = select(User)
        if username is not None:
            stmt = stmt.where(User.username == username)
        elif email is not None:
            stmt = stmt.where(User.email == email.lower())
        else:
            return None
        user = session.execute(stmt).scalar_one_or_none()
        return None if user is None else _account(user)


def create_user(
    engine: Engine,
    username: str,
    password: str,
    *,
    role: str,
    municipality_id: uuid.UUID | str,
    ward_id: str | None = None,
    email: str | None = None,
) -> Account:
    """Create a user after checking role, municipality and ward. InvalidValue / NotFound on bad input."""
    if not isinstance(username, str) or not USERNAME_RE.match(username):
        raise InvalidValue("a username is 2-150 letters, digits or . _ - @, starting with a letter or digit")
    try:
        role_value = Role(role).value
    except ValueError:
        raise InvalidValue(f"unknown role {role!r}; choose from {', '.join(r.value for r in Role)}") from None
    try:
        muni_id = municipality_id if isinstance(municipality_id, uuid.UUID) else uuid.UUID(str(municipality_id))
    except ValueError:
        raise InvalidValue(f"not a municipality id: {municipality_id!r}") from None
    password_hash = hash_password(password)
    with Session(engine) as session:
        if session.get(Municipality, muni_id) is None:
            raise NotFound(f"no municipality with id {muni_id}")
        if role_value == Role.WARD_COUNCILLOR.value and not ward_id:
            raise InvalidValue("a ward councillor needs --ward")
        if ward_id is not None:
            ward = session.get(Ward, ward_id)
            if ward is None or ward.municipality_id != muni_id:
                raise NotFound(f"no ward {ward_id!r} in that municipality")
        user = User(
            username=username,
            email=email.lower() if email else None,
            password_hash=password_hash,
            role=role_value,
            municipality_id=muni_id,
            ward_id=ward_id,
        )
        session.add(user)
        try:
            session.commit()
        except IntegrityError:
            raise InvalidValue(f"a user named {username!r} (or with that email) already exists") from None
        return _account(user)



def _update_user(engine: Engine, username: str, **values) -> None:
    with Session(engine) as session:
        user = session.execute(select(User).where(User.username == username)).scalar_one_or_none()
        if user is None:
            raise NotFound(f"no user named {username!r}")
        for name, value in values.items():
            setattr(user, name, value)
        session.commit()


def set_password(engine: Engine, username: str, password: str) -> int:
    """Give ``username`` a new password and end every session of theirs; how many sessions ended.

    A stolen session must not outlive the password change its owner made because of it.
    """
    from .web_sessions import PASSWORD_CHANGED, revoke_user_sessions

    _update_user(engine, username, password_hash=hash_password(password))
    return revoke_user_sessions(engine, username, PASSWORD_CHANGED)


def set_active(engine: Engine, username: str, active: bool) -> int:
    """Enable or disable ``username``; disabling ends every session of theirs (how many ended)."""
    from .web_sessions import DISABLED, revoke_user_sessions

    _update_user(engine, username, is_active=active)
    return 0 if active else revoke_user_sessions(engine, username, DISABLED)
