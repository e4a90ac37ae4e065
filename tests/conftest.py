"""Shared fixtures: real SQLite and PostgreSQL databases, Redis, served OpsDash processes.

Service-backed tests skip with a clear reason when a service is absent on a
laptop, and fail instead when CI=true (a CI run must never pass by skipping).
"""
from __future__ import annotations

import os
import shutil

# Seeding hashes a password per demo user; the cheapest argon2 profile keeps
# that fast in tests. Must be set before data.users is imported.
os.environ.setdefault("OPSDASH_FAST_PASSWORD_HASH", "1")

import uuid
from contextlib import contextmanager
from typing import Callable, Iterator

import pytest
from sqlalchemy import Engine, text

from data.db import make_engine, migrate
from data.scope import Scope, scope_for_user
from data.seed import SeedResult, seed

from .support import (
    CI,
    PG_ADMIN_URL,
    REDIS_URL,
    OpsDashServer,
    chromium_path,
    postgres_available,
    redis_available,
    service_missing,
)


def require_postgres() -> None:
    if not postgres_available():
        service_missing(f"PostgreSQL is not running at {PG_ADMIN_URL}")


def require_redis() -> None:
    if not redis_available():
        service_missing(f"Redis is not running at {REDIS_URL}")


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    """A fresh PostgreSQL database for this test run, migrated; dropped afterwards."""
    with empty_pg_database() as url:
        engine = make_engine(url)
        migrate(engine)
        engine.dispose()
        yield url


@contextmanager
def empty_pg_database() -> Iterator[str]:
    """A new, empty PostgreSQL database (no schema); dropped on exit, with any pooled engine."""
    require_postgres()
    name = f"opsdash_t_{uuid.uuid4().hex[:10]}"
    admin = make_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT", poolclass=None)
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    try:
        yield url
    finally:
        from data.db import _engines

        for key in [k for k in _engines if k == url]:
            _engines.pop(key).dispose()
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(scope="session")
def sqlite_url(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("sqlite") / "opsdash.sqlite3"
    url = f"sqlite:///{path}"
    engine = make_engine(url)
    migrate(engine)
    engine.dispose()
    return url


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request) -> str:
    """The same test on SQLite and on PostgreSQL."""
    return request.getfixturevalue("sqlite_url" if request.param == "sqlite" else "pg_url")


@pytest.fixture
def engine(db_url) -> Engine:
    from data.db import get_engine

    return get_engine(db_url)


@pytest.fixture
def pg_engine(pg_url) -> Engine:
    from data.db import get_engine

    return get_engine(pg_url)


@pytest.fixture
def make_seed(engine) -> Callable[..., SeedResult]:
    """Seed fresh municipalities (tests isolate themselves by tenancy)."""

    def _seed(**kwargs) -> SeedResult:
        kwargs.setdefault("tickets", 400)
        kwargs.setdefault("wards", 4)
        kwargs.setdefault("municipalities", 2)
        return seed(engine, **kwargs)

    return _seed


def user_of(result: SeedResult, role: str, municipality: int = 0, ward_index: int = 0) -> dict:
    """The seeded user of ``role`` in the ``municipality``-th seeded municipality."""
    muni_id = result.municipalities[municipality]["id"]
    users = [u for u in result.users if u["role"] == role and u["municipality_id"] == muni_id]
    return users[ward_index] if role == "ward_councillor" else users[0]


def scope_of(engine: Engine, result: SeedResult, role: str, municipality: int = 0, ward_index: int = 0) -> Scope:
    return scope_for_user(engine, user_of(result, role, municipality, ward_index)["username"])


@pytest.fixture(scope="session")
def redis_url() -> str:
    require_redis()
    return REDIS_URL


@pytest.fixture(scope="session")
def chromium() -> str:
    path = chromium_path()
    if path is None:
        service_missing("Debian's chromium is not installed (apt-get install -y chromium)")
    return path


@pytest.fixture(scope="session")
def soffice() -> str:
    """LibreOffice's ``soffice`` (Debian's libreoffice-calc), to open exports as a spreadsheet user would."""
    path = shutil.which("soffice") or shutil.which("libreoffice")
    if path is None:
        service_missing("LibreOffice is not installed (apt-get install -y --no-install-recommends libreoffice-calc)")
    return path


@pytest.fixture
def opsdash_server(tmp_path) -> Iterator[Callable[..., OpsDashServer]]:
    """Start real ``opsdash serve`` processes; all are stopped after the test."""
    started: list[OpsDashServer] = []

    def _start(database_url: str | None, **kwargs) -> OpsDashServer:
        server = OpsDashServer(database_url=database_url, log_dir=tmp_path, **kwargs)
        server.start()
        started.append(server)
        return server

    yield _start
    for server in started:
        server.stop()


__all__ = ["CI", "scope_of", "user_of", "require_postgres", "require_redis"]


@pytest.fixture(params=["in-process", "redis"])
def live_bus(request):
    """The same live-event test on the in-process bus and on real Redis (fresh channels isolate tests)."""
    from data.events import InProcessBus, RedisBus

    if request.param == "redis":
        require_redis()
        return RedisBus(REDIS_URL, client_name=f"opsdash-hub-test-{uuid.uuid4().hex[:8]}")
    return InProcessBus()


def ticket_record(tenant_id: uuid.UUID, **values) -> dict:
    """One tickets-table row for direct inserts (defaults: a visible open water ticket, now)."""
    from datetime import datetime, timezone

    row = {
        "id": uuid.uuid4(), "tenant_id": tenant_id, "ward_id": "W1",
        "tracking_number": f"T-{uuid.uuid4().hex[:16]}", "category": "water", "status": "open",
        "severity": "medium", "description": "", "address": None, "language": "en", "is_sensitive": False,
        "created_at": datetime.now(timezone.utc),
    }
    row.update(values)
    return row


def add_tickets(engine: Engine, rows: list[dict]) -> None:
    """Insert ``ticket_record`` rows around the gate (tests build their own worlds)."""
    from data.models import Ticket

    if rows:
        with engine.begin() as conn:
            conn.execute(Ticket.__table__.insert(), rows)


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_db_url(request, tmp_path) -> Iterator[str]:
    """A brand-new database without any schema, on SQLite and on PostgreSQL."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'fresh.sqlite3'}"
        return
    with empty_pg_database() as url:
        yield url


CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture
def chromium_browser(chromium):
    """A Playwright Browser on Debian's chromium (never a downloaded browser); closed after the test."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


# ---- browser helpers for dashboard pages (Playwright sync API) ---------------------------------
#: Text of Panel panes: Bokeh renders each pane into a shadow root that innerText does not enter.
PANE_TEXT = """els => els.map(e => [...(e.shadowRoot || e).childNodes]
  .filter(n => !['STYLE', 'LINK', 'SCRIPT'].includes(n.nodeName)).map(n => n.textContent).join('').trim())"""


def pane_texts(page, css_class: str) -> list[str]:
    """Texts of the panes carrying ``css_class`` (e.g. ``opsdash-kpi-value``), in page order."""
    return page.locator(f".{css_class}").evaluate_all(PANE_TEXT)


def wait_for_dashboard(page, timeout_ms: int = 60_000) -> None:
    """Until KPI values and the table's first page (or its empty notice) are on screen."""
    page.wait_for_selector(".opsdash-kpi-value", timeout=timeout_ms)
    # The table's "Loading tickets..." placeholder is a notice too, but not an end state.
    settled_notice = page.locator(".opsdash-notice:visible").filter(has_not_text="Loading tickets")
    page.locator(".tabulator-row").or_(settled_notice).first.wait_for(timeout=timeout_ms)


def browser_sign_in(page, base_url: str, username: str, password: str, *, dashboard: bool = True) -> None:
    """Sign in through the real /login form; with ``dashboard`` wait until it has rendered."""
    page.goto(f"{base_url}/login", timeout=60_000)
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", password)
    with page.expect_navigation(timeout=60_000):
        page.click("button[type=submit]")
    if dashboard:
        wait_for_dashboard(page)


def save_screenshot(page, name: str) -> None:
    """test-output/screenshots/NAME.png (the visible viewport, as a person would see it)."""
    from .support import OUTPUT_DIR

    folder = OUTPUT_DIR / "screenshots"
    folder.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(folder / f"{name}.png"))


@pytest.fixture
def browser_page(chromium_browser):
    """A fresh page (own cookies) in a desktop-sized window."""
    context = chromium_browser.new_context(viewport={"width": 1400, "height": 1000})
    try:
        yield context.new_page()
    finally:
        context.close()


# ---- a database owned by an application role of its own (row-level security, issue 14) -----------
@contextmanager
def app_role_database() -> Iterator["AppDatabase"]:
    """A new database owned by a LOGIN role with CREATEROLE and nothing else, migrated by it.

    As in production: the app role owns ``tickets`` (so row security does not apply to
    it) without being a superuser (superusers bypass every policy, which would prove
    nothing). PostgreSQL roles are cluster-wide, shared with every other test run:
    every role this database's tests make starts with ``prefix`` or is mapped in
    ``opsdash_db_roles``, and all are dropped on exit.
    """
    from .db_roles_support import AppDatabase

    require_postgres()
    prefix = f"opsdash_t{uuid.uuid4().hex[:8]}_"
    app_role, name = f"{prefix}app", f"opsdash_rls_{uuid.uuid4().hex[:10]}"
    admin = make_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT", poolclass=None)
    with admin.connect() as conn:
        conn.execute(text(f'CREATE ROLE "{app_role}" LOGIN CREATEROLE'))
        conn.execute(text(f'CREATE DATABASE "{name}" OWNER "{app_role}"'))
    base = PG_ADMIN_URL.rsplit("/", 1)[0]
    database = AppDatabase(url=base.replace("postgres@", f"{app_role}@") + f"/{name}",
                           admin_url=f"{base}/{name}", name=name, app_role=app_role, prefix=prefix)
    try:
        engine = make_engine(database.url)
        migrate(engine)
        engine.dispose()
        yield database
    finally:
        from data.db import _engines

        for key in [k for k in _engines if k == database.url]:
            _engines.pop(key).dispose()
        in_db = make_engine(database.admin_url, isolation_level="AUTOCOMMIT", poolclass=None)
        with in_db.connect() as conn:
            # quote_ident: the tests make role names with quotes and semicolons on purpose.
            mapped = "SELECT role_name FROM opsdash_db_roles" if conn.execute(
                text("SELECT to_regclass('opsdash_db_roles') IS NOT NULL")).scalar_one() else "SELECT NULL::name"
            roles = conn.execute(text(
                "SELECT quote_ident(rolname) FROM pg_roles WHERE starts_with(rolname, :prefix) AND rolname <> :app "
                f"OR rolname IN ({mapped})"), {"prefix": prefix, "app": app_role}).scalars().all()
            for role in roles:
                conn.execute(text(f"DROP OWNED BY {role}"))
        in_db.dispose()
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            for role in [*roles, f'"{app_role}"']:
                conn.execute(text(f"DROP ROLE IF EXISTS {role}"))
        admin.dispose()


@pytest.fixture(scope="module")
def rls_world() -> Iterator["RlsWorld"]:
    """Two seeded municipalities in an ``app_role_database``, plus tickets that must stay hidden.

    In every ward of both: a ticket flagged sensitive, gbv spelled ``'GBV '``, ``'ＧＢＶ'``
    and ``'gbv\\u200b'``, and one of the unknown category ``'fire'``.
    """
    from data.db import get_engine

    from .db_roles_support import HIDDEN_CATEGORIES, RlsWorld

    with app_role_database() as database:
        engine = get_engine(database.url)
        result = seed(engine, tickets=300, wards=3, municipalities=2, random_seed=14)
        hidden = [ticket_record(uuid.UUID(m["id"]), ward_id=ward, category=category, is_sensitive=flagged,
                                description=f"survivor statement {uuid.uuid4().hex[:6]}")
                  for m in result.municipalities for ward in m["wards"]
                  for category, flagged in [("water", True), *((c, False) for c in HIDDEN_CATEGORIES)]]
        add_tickets(engine, hidden)
        with engine.begin() as conn:
            conn.execute(text("ANALYZE tickets"))  # so the statistics views have something to hide
        yield RlsWorld(database=database, engine=engine, seeded=result,
                       hidden_ids=frozenset(str(row["id"]) for row in hidden))
