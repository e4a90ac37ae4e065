"""Settings: one typed, documented field per ``OPSDASH_*`` variable, read once and validated at start-up.

pydantic-settings reads them: the real environment first, then a ``.env`` file at the
OpsDash home (python-dotenv parses it: quotes, comments, ``export``). Nothing else in
OpsDash reads ``os.environ``. A bad value raises ConfigError with one sentence per bad
variable, naming it and never echoing a secret.

They live in the data layer because the command line, the server and a notebook all
need the same values, and ``data`` is the layer all of them may import.
``dashboard_app.settings`` re-exports them. The README's settings table lists exactly
these fields (tests/test_settings_fields.py compares them).
"""
from __future__ import annotations

import os
import re
import tomllib
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal, Mapping
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from .errors import ConfigError
from .redis_nodes import parse_redis_url

ENV_PREFIX = "OPSDASH_"
DEFAULT_TIMEZONE = "Africa/Johannesburg"
#: Under the OpsDash home (``opsdash_home``), where ``make serve`` / ``opsdash serve --demo`` puts the demo.
DEFAULT_SQLITE_PATH = Path("var") / "opsdash.sqlite3"
#: Shortest cookie secret accepted outside ``--demo``: it signs every session cookie and export link,
#: so it must be too long to guess (``secrets.token_urlsafe(48)`` gives 64 characters).
MIN_COOKIE_SECRET_LENGTH = 32
MAKE_COOKIE_SECRET = 'python -c "import secrets; print(secrets.token_urlsafe(48))"'
#: Fields whose value never appears in an error message or repr (URLs are shown with credentials masked).
SECRET_FIELDS = frozenset({"cookie_secret", "metrics_token", "database_url", "read_database_url", "redis_url"})


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


def _default_database_url() -> str:
    # Absolute, so the default names the same file from every folder of the checkout.
    return f"sqlite:///{opsdash_home() / DEFAULT_SQLITE_PATH}"


def env_name(field: str) -> str:
    """The environment variable of a Settings field: ``session_hours`` -> ``OPSDASH_SESSION_HOURS``."""
    return ENV_PREFIX + field.upper()


def _without_credentials(url: str) -> str:
    """``url`` with any user:password part masked, for error messages and logs."""
    return re.sub(r"://[^@/]*@", "://***@", url)


def _checked_database_url(value: str) -> str:
    shown = _without_credentials(value)
    try:
        url = make_url(value)
    except (ArgumentError, ValueError):
        raise ValueError(f"is not a database URL: {shown!r} "
                         "(expected e.g. postgresql+psycopg://user@host/db or sqlite:///var/opsdash.sqlite3)") from None
    if url.get_backend_name() not in ("sqlite", "postgresql"):
        raise ValueError(f"must point at SQLite or PostgreSQL, got {url.get_backend_name()!r}")
    if url.get_backend_name() == "postgresql" and url.get_driver_name() not in ("psycopg", ""):
        raise ValueError("for PostgreSQL must use the psycopg driver (postgresql+psycopg://...)")
    if url.drivername == "postgresql":  # no driver named: use the one we ship, whatever SQLAlchemy defaults to
        return url.set(drivername="postgresql+psycopg").render_as_string(hide_password=False)
    return value


class Settings(BaseSettings):
    """OpsDash's settings. Build them with ``load_settings()`` (which also reads the home ``.env``)."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_ignore_empty=True,  # `OPSDASH_X=` means the default, as an unset variable does
        env_file_encoding="utf-8",
        extra="ignore",  # other OPSDASH_* variables (the tests' own) are not settings
        frozen=True,
        validate_default=True,  # the default database URL goes through the same checks
    )

    database_url: str = Field(
        default_factory=_default_database_url, repr=False,
        description="SQLAlchemy URL: `postgresql+psycopg://user@host/db` in production; a relative "
                    "`sqlite:///` path is taken from the working folder",
        json_schema_extra={"shown_default": "`var/opsdash.sqlite3` at the root of the clone, "
                                            "from any folder in it (below)"})
    read_database_url: str | None = Field(
        None, repr=False,
        description="a PostgreSQL streaming replica of `OPSDASH_DATABASE_URL` for the dashboard's figures and table, "
                    "notebook frames and exports; used once it has replayed what the primary had committed when the "
                    "read began, otherwise the primary answers (docs/deployment.md, \"From one host to a metro\"); "
                    "sign-in, sessions, audit and every write stay on the primary",
        json_schema_extra={"shown_default": "unset: the primary answers every read"})
    redis_url: str | None = Field(
        None, repr=False,
        description="`redis://127.0.0.1:6379/0`: live events across processes and shared sign-in throttling; "
                    "a Redis Cluster: `redis+cluster://host:port[,host:port...]`; Sentinel: "
                    "`redis+sentinel://host:port[,host:port...]/service_name` (docs/deployment.md)",
        json_schema_extra={"shown_default": "unset: in-process bus (one process)"})
    cookie_secret: str | None = Field(
        None, repr=False,
        description="signs session cookies and export links; at least 32 characters "
                    f"(`{MAKE_COOKIE_SECRET}`), the same on every instance",
        json_schema_extra={"shown_default": "required unless `--demo`"})
    timezone: str = Field(
        DEFAULT_TIMEZONE,
        description="a time zone name, checked at start-up; displays and exports use each municipality's own "
                    "time zone (recorded with it, this one by default)")
    live_interval_ms: int = Field(500, ge=50, le=60_000,
                                  description="how often a session drains its live events (50-60000)")
    allowed_origins: Annotated[tuple[str, ...], NoDecode] = Field(
        (), description="extra websocket origins (a proxy's `host:port`), comma separated")
    login_max_attempts: int = Field(
        5, ge=1, le=1000,
        description="password checks allowed per account from one address in `OPSDASH_LOGIN_WINDOW_S` (10 times "
                    "that per account from all addresses); shared by all processes through Redis when "
                    "`OPSDASH_REDIS_URL` is set")
    login_window_s: int = Field(300, ge=1, le=86_400,
                                description="the window of `OPSDASH_LOGIN_MAX_ATTEMPTS`, in seconds")
    session_hours: int = Field(
        12, ge=1, le=24 * 30,
        description="how long a sign-in lasts (1-720); sign-out, a password change, disabling the user and "
                    "`opsdash user sign-out` end it earlier")
    https: bool = Field(False, description="`1`: the site is served over HTTPS (directly or by the proxy); "
                                           "cookies get `Secure` and responses HSTS")
    metrics_token: str | None = Field(
        None, min_length=16, repr=False,
        description="operator token (at least 16 characters): `Authorization: Bearer ...` reads `/metrics` "
                    "(Prometheus) and `/health`'s details",
        json_schema_extra={"shown_default": "unset: no `/metrics` route, no details"})
    large_export_rows: int = Field(
        50_000, ge=1, le=10**9,
        description="above this many rows the download buttons stream over HTTP instead of the websocket")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        "INFO", description="level of the `opsdash` log lines of a served process (sign-ins, refusals, live updates)")
    log_format: Literal["text", "json"] = Field(
        "text", description="`json`: a served process writes one JSON object per log line (time, level, logger, "
                            "message, request and session id, user), never passwords, tokens, cookies or ticket text")
    demo: bool = Field(False, description="set by `opsdash serve --demo` for its own process: the simulator runs "
                                          "and a short cookie secret is accepted; never set it in production")
    fast_password_hash: bool = Field(
        False, description="`1`: the cheapest argon2 profile, for tests and benchmarks that hash many demo "
                           "passwords; never in production")
    api_rate_per_minute: int = Field(
        120, ge=1, le=100_000,
        description="requests a minute allowed per API token (or signed-in user) on `/api/v1/`; an event stream "
                    "counts once; shared by all processes through Redis when `OPSDASH_REDIS_URL` is set")
    api_heartbeat_s: float = Field(
        15.0, ge=0.1, le=300,
        description="seconds between heartbeat comments on a quiet `/api/v1/dashboard/events` stream")
    api_stream_max_s: int = Field(
        900, ge=5, le=86_400,
        description="the server ends an event stream after this many seconds; the client reconnects with "
                    "`Last-Event-ID` and its token or sign-in is checked again (a revoked one ends within this)")
    notebook_user: str = Field("manager.ethekwini",
                               description="the user `examples/opsdash_dashboard.ipynb` builds its dashboard for")
    statement_timeout_s: int = Field(
        30, ge=0, le=3600,
        description="PostgreSQL stops a query of the served dashboard (figures, table pages, sign-in and session "
                    "checks, live-event lookups) that runs longer, and the page says the database is slow and "
                    "retries by itself; exports and the command line are not limited (0: no limit)")
    shutdown_grace_s: int = Field(
        25, ge=1, le=600,
        description="on SIGTERM the server tells open pages it is restarting, lets running downloads finish for "
                    "up to this many seconds, and exits within them (keep it below the service manager's stop "
                    "timeout: systemd `TimeoutStopSec`, Kubernetes `terminationGracePeriodSeconds`)")

    @field_validator("database_url")
    @classmethod
    def _database_url(cls, value: str) -> str:
        return _checked_database_url(value)

    @field_validator("redis_url")
    @classmethod
    def _redis_url(cls, value: str | None) -> str | None:
        """Refuse at start-up what redis-py would only reject at the first connection."""
        if value is None:
            return None
        try:
            parse_redis_url(value)
        except ValueError as exc:
            raise ValueError(f"{exc}, got {_without_credentials(value)!r}") from None
        return value

    @field_validator("read_database_url")
    @classmethod
    def _read_database_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        url = _checked_database_url(value)
        if not url.startswith("postgresql"):
            raise ValueError("must point at a PostgreSQL streaming replica (postgresql+psycopg://...)")
        return url

    @field_validator("timezone")
    @classmethod
    def _timezone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"is not a known time zone: {value!r} (e.g. Africa/Johannesburg)") from None
        return value

    @field_validator("allowed_origins", mode="before")
    @classmethod
    def _comma_separated(cls, value: Any) -> Any:
        return tuple(o.strip() for o in value.split(",") if o.strip()) if isinstance(value, str) else value

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper_case(cls, value: Any) -> Any:
        return value.strip().upper() if isinstance(value, str) else value

    @field_validator("log_format", mode="before")
    @classmethod
    def _lower_case(cls, value: Any) -> Any:
        return value.strip().lower() if isinstance(value, str) else value

    @model_validator(mode="after")
    def _cookie_secret_long_enough(self) -> Settings:
        """Refuse a guessable cookie secret (a local ``--demo`` makes its own, so it is exempt)."""
        secret = self.cookie_secret
        if secret and not self.demo and len(secret) < MIN_COOKIE_SECRET_LENGTH:
            raise ValueError(
                f"OPSDASH_COOKIE_SECRET is too short ({len(secret)} characters, at least {MIN_COOKIE_SECRET_LENGTH} "
                f"needed): make one with {MAKE_COOKIE_SECRET} and use the same value on every instance")
        return self

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    @property
    def tzinfo(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    def describe(self) -> dict[str, object]:
        """Settings safe to print or log (no secrets, passwords masked)."""
        return {
            "database_url": make_url(self.database_url).render_as_string(hide_password=True),
            "read_database_url": (make_url(self.read_database_url).render_as_string(hide_password=True)
                                  if self.read_database_url else None),
            "redis_url": _without_credentials(self.redis_url) if self.redis_url else None,
            "cookie_secret": "set" if self.cookie_secret else "unset",
            "timezone": self.timezone,
            "live_interval_ms": self.live_interval_ms,
            "allowed_origins": list(self.allowed_origins),
            "session_hours": self.session_hours,
            "https": self.https,
            "metrics_token": "set" if self.metrics_token else "unset",
            "log_level": self.log_level,
            "log_format": self.log_format,
            "demo": self.demo,
        }


def _bounds(field: str) -> tuple[object, object]:
    metadata = Settings.model_fields[field].metadata
    low = next((m.ge for m in metadata if hasattr(m, "ge")), None)
    high = next((m.le for m in metadata if hasattr(m, "le")), None)
    return low, high


def _sentence(error: Mapping[str, Any]) -> str:
    """One sentence for one failed field, naming its variable; a secret's value is never shown."""
    kind, ctx = error["type"], error.get("ctx", {})
    if not error["loc"]:  # a check across fields: its message names the variable itself
        return str(ctx.get("error", error["msg"]))
    field = str(error["loc"][0])
    variable = env_name(field)
    got = "" if field in SECRET_FIELDS else f", got {error['input']!r}"
    if kind == "value_error":
        return f"{variable} {ctx['error']}"
    if kind in ("int_parsing", "int_from_float", "int_type"):
        return f"{variable} must be a whole number{got}"
    if kind in ("greater_than_equal", "less_than_equal"):
        low, high = _bounds(field)
        return f"{variable} must be between {low} and {high}{got}"
    if kind == "bool_parsing":
        return f"{variable} must be 1/true/yes/on or 0/false/no/off{got}"
    if kind == "string_too_short":
        return (f"{variable} is too short ({len(error['input'])} characters, "
                f"at least {ctx['min_length']} needed)")
    if kind == "literal_error":
        return f"{variable} must be one of {ctx['expected']}{got}"
    return f"{variable} is not valid ({error['msg']}){got}"


def systemd_cache_directory() -> Path | None:
    """The folder systemd keeps for this service (``CacheDirectory=``, given as ``$CACHE_DIRECTORY``).

    Not an OpsDash setting: the service manager's own, read here as every environment read is.
    ``docs/deployment/opsdash@.service`` asks for one; the best-compressed static files live there.
    """
    first = os.environ.get("CACHE_DIRECTORY", "").split(":")[0]
    return Path(first) if first else None


def load_settings(*, dotenv: Path | Literal["home"] | None = "home") -> Settings:
    """Validated Settings from the environment over a ``.env`` file.

    ``dotenv``: a file to read, ``"home"`` (the ``.env`` of ``opsdash_home()``) or None (none).
    Raises ConfigError, one sentence per bad variable naming it, for any bad value.
    """
    env_file = opsdash_home() / ".env" if dotenv == "home" else dotenv
    try:
        return Settings(_env_file=env_file)  # type: ignore[call-arg]  # pydantic-settings' init option
    except ValidationError as exc:
        # `from None`: the ValidationError's own text shows the input, which may be a secret.
        raise ConfigError("; ".join(_sentence(error) for error in exc.errors())) from None


@lru_cache(maxsize=1)
def current_settings() -> Settings:
    """This process's settings, read and validated once (``current_settings.cache_clear()`` reads them again)."""
    return load_settings()
