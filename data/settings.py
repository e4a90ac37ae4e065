"""Settings: read once from the environment (and an optional ``.env``), validated.

They live in the data layer because the command line, the server and a
notebook all need the same values, and ``data`` is the layer all of them may
import. ``dashboard_app.settings`` re-exports them.
"""
from __future__ import annotations

import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Mapping
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from .errors import ConfigError

DEFAULT_TIMEZONE = "Africa/Johannesburg"
#: Under the OpsDash home (``opsdash_home``), where ``make serve`` / ``opsdash serve --demo`` puts the demo.
DEFAULT_SQLITE_PATH = Path("var") / "opsdash.sqlite3"
#: Shortest cookie secret accepted outside ``--demo``: it signs every session cookie and export link,
#: so it must be too long to guess (``secrets.token_urlsafe(48)`` gives 64 characters).
MIN_COOKIE_SECRET_LENGTH = 32
MAKE_COOKIE_SECRET = 'python -c "import secrets; print(secrets.token_urlsafe(48))"'


def _is_opsdash_checkout(folder: Path) -> bool:
    try:
        with (folder / "pyproject.toml").open("rb") as file:
            return tomllib.load(file).get("project", {}).get("name") == "opsdash"
    except (OSError, tomllib.TOMLDecodeError):
        return False


def opsdash_home(cwd: Path | None = None) -> Path:
    """The folder the default database (``var/``) and ``.env`` belong to.

    Inside a clone of OpsDash, its root (the nearest folder at or above ``cwd`` whose
    pyproject.toml names the ``opsdash`` project), so Jupyter running the notebook from
    ``examples/`` finds the demo database ``make serve`` made at the root. Elsewhere (an
    installed package used from any folder) the working folder itself, as before.
    """
    start = (cwd or Path.cwd()).resolve()
    return next((folder for folder in (start, *start.parents) if _is_opsdash_checkout(folder)), start)


def _read_dotenv(path: Path) -> dict[str, str]:
    """Parse KEY=VALUE lines; comments and blank lines are skipped."""
    values: dict[str, str] = {}
    if not path.is_file():
        return values
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        key = key.strip().removeprefix("export ").strip()
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        values[key] = value
    return values


@dataclass(frozen=True)
class Settings:
    database_url: str
    redis_url: str | None = None
    cookie_secret: str | None = None
    timezone: str = DEFAULT_TIMEZONE
    live_interval_ms: int = 500
    allowed_origins: tuple[str, ...] = ()
    login_max_attempts: int = 5
    login_window_s: int = 300
    large_export_rows: int = 50_000
    session_hours: int = 12
    https: bool = False
    metrics_token: str | None = field(default=None, repr=False)
    extra: Mapping[str, str] = field(default_factory=dict, repr=False)

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    @property
    def tzinfo(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    def describe(self) -> dict[str, object]:
        """Settings safe to print or log (no secrets, passwords masked)."""
        from sqlalchemy.engine import make_url

        redis = self.redis_url
        if redis and "@" in redis:
            scheme, _, rest = redis.partition("://")
            redis = f"{scheme}://***@{rest.split('@', 1)[1]}"
        return {
            "database_url": make_url(self.database_url).render_as_string(hide_password=True),
            "redis_url": redis,
            "cookie_secret": "set" if self.cookie_secret else "unset",
            "timezone": self.timezone,
            "live_interval_ms": self.live_interval_ms,
            "allowed_origins": list(self.allowed_origins),
            "session_hours": self.session_hours,
            "https": self.https,
            "metrics_token": "set" if self.metrics_token else "unset",
        }


def _without_credentials(url: str) -> str:
    """``url`` with any user:password part masked, for error messages and logs."""
    return re.sub(r"://[^@/]*@", "://***@", url)


def _check_redis_url(url: str) -> None:
    """Refuse at start-up what redis-py would only reject at the first connection."""
    shown = _without_credentials(url)
    if not url.startswith(("redis://", "rediss://", "unix://")):
        raise ConfigError(f"OPSDASH_REDIS_URL must start with redis://, rediss:// or unix://, got {shown!r}")
    parsed = urlsplit(url)
    try:
        parsed.port
    except ValueError:
        raise ConfigError(f"OPSDASH_REDIS_URL has a port that is not a number from 0 to 65535: {shown!r}") from None
    database = parsed.path.strip("/")
    if parsed.scheme != "unix" and database and not database.isdigit():
        raise ConfigError(f"OPSDASH_REDIS_URL must end in a database number like /0, got {shown!r}")


def _check_cookie_secret(secret: str | None, demo: bool) -> None:
    """Refuse a guessable cookie secret (a local ``--demo`` makes its own, so it is exempt)."""
    if secret and not demo and len(secret) < MIN_COOKIE_SECRET_LENGTH:
        raise ConfigError(
            f"OPSDASH_COOKIE_SECRET is too short ({len(secret)} characters, at least {MIN_COOKIE_SECRET_LENGTH} "
            f"needed): make one with {MAKE_COOKIE_SECRET} and use the same value on every instance"
        )


def _int_setting(env: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a whole number, got {raw!r}") from None
    if not low <= value <= high:
        raise ConfigError(f"{name} must be between {low} and {high}, got {value}")
    return value


def _bool_setting(env: Mapping[str, str], name: str) -> bool:
    raw = (env.get(name) or "").strip().lower()
    if raw in ("", "0", "false", "no", "off"):
        return False
    if raw in ("1", "true", "yes", "on"):
        return True
    raise ConfigError(f"{name} must be 1/true/yes or 0/false/no, got {raw!r}")


def _metrics_token(env: Mapping[str, str]) -> str | None:
    token = env.get("OPSDASH_METRICS_TOKEN") or None
    if token is not None and len(token) < 16:  # it unlocks operational details: not a guessable word
        raise ConfigError(f"OPSDASH_METRICS_TOKEN is too short ({len(token)} characters, at least 16 needed)")
    return token


def load_settings(env: Mapping[str, str] | None = None, *, dotenv: Path | Literal["home"] | None = "home") -> Settings:
    """Build validated Settings from ``env`` (default: ``os.environ`` over the ``.env`` of ``opsdash_home()``).

    ``dotenv``: a file to read, ``"home"`` (the ``.env`` of ``opsdash_home()``) or None (none).
    Raises ConfigError with a message naming the variable for any bad value.
    """
    home = opsdash_home()
    merged: dict[str, str] = {}
    if dotenv is not None:
        merged.update(_read_dotenv(home / ".env" if dotenv == "home" else dotenv))
    merged.update(os.environ if env is None else env)

    # Absolute, so the default names the same file from every folder of the checkout.
    database_url = merged.get("OPSDASH_DATABASE_URL") or f"sqlite:///{home / DEFAULT_SQLITE_PATH}"
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        url = make_url(database_url)
    except (ArgumentError, ValueError):
        raise ConfigError(
            f"OPSDASH_DATABASE_URL is not a database URL: {_without_credentials(database_url)!r} "
            "(expected e.g. postgresql+psycopg://user@host/db or sqlite:///var/opsdash.sqlite3)"
        ) from None
    if url.get_backend_name() not in ("sqlite", "postgresql"):
        raise ConfigError(
            f"OPSDASH_DATABASE_URL must point at SQLite or PostgreSQL, got {url.get_backend_name()!r}"
        )
    if url.get_backend_name() == "postgresql" and url.get_driver_name() not in ("psycopg", ""):
        raise ConfigError("OPSDASH_DATABASE_URL for PostgreSQL must use the psycopg driver (postgresql+psycopg://...)")
    if url.drivername == "postgresql":  # no driver named: use the one we ship, whatever SQLAlchemy defaults to
        database_url = url.set(drivername="postgresql+psycopg").render_as_string(hide_password=False)

    redis_url = merged.get("OPSDASH_REDIS_URL") or None
    if redis_url:
        _check_redis_url(redis_url)

    timezone = merged.get("OPSDASH_TIMEZONE") or DEFAULT_TIMEZONE
    try:
        ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError(f"OPSDASH_TIMEZONE is not a known time zone: {timezone!r} (e.g. Africa/Johannesburg)") from None

    cookie_secret = merged.get("OPSDASH_COOKIE_SECRET") or None
    _check_cookie_secret(cookie_secret, demo=merged.get("OPSDASH_DEMO") == "1")

    origins = tuple(o.strip() for o in merged.get("OPSDASH_ALLOWED_ORIGINS", "").split(",") if o.strip())
    return Settings(
        database_url=database_url,
        redis_url=redis_url,
        cookie_secret=cookie_secret,
        timezone=timezone,
        live_interval_ms=_int_setting(merged, "OPSDASH_LIVE_INTERVAL_MS", 500, 50, 60_000),
        allowed_origins=origins,
        login_max_attempts=_int_setting(merged, "OPSDASH_LOGIN_MAX_ATTEMPTS", 5, 1, 1000),
        login_window_s=_int_setting(merged, "OPSDASH_LOGIN_WINDOW_S", 300, 1, 86_400),
        large_export_rows=_int_setting(merged, "OPSDASH_LARGE_EXPORT_ROWS", 50_000, 1, 10**9),
        session_hours=_int_setting(merged, "OPSDASH_SESSION_HOURS", 12, 1, 24 * 30),
        https=_bool_setting(merged, "OPSDASH_HTTPS"),
        metrics_token=_metrics_token(merged),
        extra={k: v for k, v in merged.items() if k.startswith("OPSDASH_")},
    )
