"""Shared fixtures: real SQLite and PostgreSQL databases, Redis, served OpsDash processes.

Fixtures only: the helpers they use, and tests import, are in ``tests.helpers``.

Service-backed tests skip with a clear reason when a service is absent on a
laptop, and fail instead when CI=true (a CI run must never pass by skipping).
"""
from __future__ import annotations

import os
import shutil

# Seeding hashes a password per demo user; the cheapest argon2 profile keeps
# that fast in tests. Set before anything reads the settings (the first hash does).
os.environ.setdefault("OPSDASH_FAST_PASSWORD_HASH", "1")

import itertools
import uuid
from pathlib import Path
from typing import Callable, Iterator, Literal

import pytest
from sqlalchemy import Engine, text

from data.db import make_engine, migrate
from data.seed import SeedResult, seed
from data.settings import ENV_PREFIX, Settings, load_settings

from .helpers.databases import add_tickets, empty_pg_database, ticket_record
from .helpers.db_roles import HIDDEN_CATEGORIES, RlsWorld, app_role_database
from .helpers.seeds import pick_seed, replay_hint, seeds_of
from .helpers.servers import OpsDashServer
from .helpers.services import CHROMIUM_ARGS, REDIS_URL, chromium_path, require_redis, service_missing


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    """A fresh PostgreSQL database for this test run, migrated; dropped afterwards."""
    with empty_pg_database() as url:
        engine = make_engine(url)
        migrate(engine)
        engine.dispose()
        yield url


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
def random_seed(request) -> int:
    """This test's seed for random data; shown when the test fails, replayed with OPSDASH_TEST_SEED."""
    return pick_seed(request.node, "random_seed")


@pytest.fixture(scope="module")
def module_random_seed(request) -> int:
    """The seed of a module-scoped fixture's random data; shown with every failure in the module."""
    return pick_seed(request.node, "module_random_seed")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """A failed test's report shows the seeds it used (a "random seeds" section); JUnit XML records them."""
    if call.when == "teardown":  # every seed is picked by now; the teardown report carries the properties
        item.user_properties.extend(seeds_of(item).items())
    report = (yield).get_result()
    seeds = seeds_of(item)
    if report.failed and seeds:
        report.sections.append(("random seeds", replay_hint(item, seeds)))


@pytest.fixture
def settings_from(monkeypatch) -> Callable[..., Settings]:
    """``settings_from(OPSDASH_X="...", ...)``: Settings read from exactly these variables in the
    environment (every other OPSDASH_* one removed), as a served process reads them; no ``.env``
    unless ``dotenv`` names one (a file, or ``"home"``). The environment is restored after the test.
    """
    def read(dotenv: Path | Literal["home"] | None = None, **variables: str) -> Settings:
        for name in [name for name in os.environ if name.startswith(ENV_PREFIX)]:
            monkeypatch.delenv(name)
        for name, value in variables.items():
            monkeypatch.setenv(name, value)
        return load_settings(dotenv=dotenv)

    return read


@pytest.fixture
def make_seed(engine, request) -> Callable[..., SeedResult]:
    """Seed fresh municipalities (tests isolate themselves by tenancy).

    Without a ``random_seed`` argument a call uses the test's ``random_seed`` (plus one per
    earlier such call), so its data can be replayed.
    """
    calls = itertools.count()

    def _seed(**kwargs) -> SeedResult:
        kwargs.setdefault("tickets", 400)
        kwargs.setdefault("wards", 4)
        kwargs.setdefault("municipalities", 2)
        if "random_seed" not in kwargs:
            kwargs["random_seed"] = request.getfixturevalue("random_seed") + next(calls)
        return seed(engine, **kwargs)

    return _seed


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


@pytest.fixture(params=["in-process", "redis"])
def live_bus(request):
    """The same live-event test on the in-process bus and on real Redis (fresh channels isolate tests)."""
    from data.events import InProcessBus, RedisBus

    if request.param == "redis":
        require_redis()
        return RedisBus(REDIS_URL, client_name=f"opsdash-hub-test-{uuid.uuid4().hex[:8]}")
    return InProcessBus()


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_db_url(request, tmp_path) -> Iterator[str]:
    """A brand-new database without any schema, on SQLite and on PostgreSQL."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'fresh.sqlite3'}"
        return
    with empty_pg_database() as url:
        yield url


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


@pytest.fixture
def browser_page(chromium_browser):
    """A fresh page (own cookies) in a desktop-sized window."""
    context = chromium_browser.new_context(viewport={"width": 1400, "height": 1000})
    try:
        yield context.new_page()
    finally:
        context.close()


# ---- a database owned by an application role of its own (row-level security, issue 14) -----------
@pytest.fixture(scope="module")
def rls_world() -> Iterator[RlsWorld]:
    """Two seeded municipalities in an ``app_role_database``, plus tickets that must stay hidden.

    In every ward of both: a ticket flagged sensitive, gbv spelled ``'GBV '``, ``'ＧＢＶ'``
    and ``'gbv\\u200b'``, and one of the unknown category ``'fire'``.
    """
    from data.db import get_engine

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
