"""Unknown categories stay hidden (fail closed); admins see how many and how they are spelled, and add one on purpose."""
from __future__ import annotations

import asyncio
import uuid

import pytest

from data.categories import add_known_category, hidden_categories
from data.errors import InvalidValue, NotAuthorized
from data.scope import Scope
from data.tickets import scoped_tickets

from .helpers.databases import add_tickets, ticket_record
from .helpers.servers import run_opsdash


def _world(engine) -> tuple[uuid.UUID, list[dict]]:
    muni = uuid.uuid4()
    rows = [ticket_record(muni, category=c, is_sensitive=flag, description="private words")
            for c, flag in (("fire", False), ("Fire ", False), ("G\u0412V", False), ("gbv", False),
                            ("\uff27\uff22\uff36", False), ("fire", True), ("water", False))]
    add_tickets(engine, rows)
    return muni, rows


def test_admin_sees_count_and_spellings_of_unknown_categories_and_nothing_else(engine):
    muni, _ = _world(engine)
    hidden = hidden_categories(engine, Scope(municipality_id=muni, role="admin"))
    # gbv in any spelling and flagged tickets are hidden on purpose: not counted here.
    assert hidden.tickets == 3
    assert sorted(hidden.spellings) == [("'Fire '", 1), ("'G\\u0412V'", 1), ("'fire'", 1)]
    assert not any("private" in s for s, _ in hidden.spellings)
    for role, ward in (("manager", None), ("ward_councillor", "W1")):
        with pytest.raises(NotAuthorized):
            hidden_categories(engine, Scope(municipality_id=muni, role=role, ward_id=ward))


@pytest.fixture
def own_engine(empty_db_url):
    """A database of its own: adding a known category changes what every test on a shared one sees."""
    from data.db import make_engine, migrate

    engine = make_engine(empty_db_url)
    migrate(engine)
    yield engine
    engine.dispose()


def test_adding_a_category_shows_its_tickets_in_every_spelling_but_never_gbv(own_engine):
    engine = own_engine
    muni, rows = _world(engine)
    manager = Scope(municipality_id=muni, role="manager")
    before = set(scoped_tickets(engine, manager)["category"])
    assert before == {"water"}
    assert add_known_category(engine, " FIRE\u200b", added_by="admin") == "fire"
    assert add_known_category(engine, "fire") == "fire"  # idempotent
    frame = scoped_tickets(engine, manager)
    assert sorted(frame["category"]) == ["fire", "fire", "water"]  # the flagged fire ticket stays hidden
    for name in ("gbv", "\uff27\uff22\uff36", "G B V", "no spaces allowed!", ""):
        with pytest.raises(InvalidValue):
            add_known_category(engine, name)
    assert set(scoped_tickets(engine, manager)["category"]) == {"fire", "water"}


def test_category_command_lists_adds_and_refuses_gbv(own_engine, tmp_path, random_seed):
    from data.seed import seed

    db_url = own_engine.url.render_as_string(hide_password=False)
    admin = next(u for u in seed(own_engine, tickets=0, municipalities=1, random_seed=random_seed).users if u["role"] == "admin")
    add_tickets(own_engine, [ticket_record(uuid.UUID(admin["municipality_id"]), category="Potholes\u00a0")])
    listed = run_opsdash("category", "list", "--user", admin["username"], database_url=db_url, cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    assert "hidden for an unknown category: 1 tickets" in listed.stdout and "'Potholes\\u00a0'" in listed.stdout
    added = run_opsdash("category", "add", "potholes", "--by", admin["username"], database_url=db_url, cwd=tmp_path)
    assert added.returncode == 0 and "known category: potholes" in added.stdout
    refused = run_opsdash("category", "add", "GBV", database_url=db_url, cwd=tmp_path)
    assert refused.returncode == 2 and refused.stderr.startswith("opsdash: error: gbv is sensitive")
    again = run_opsdash("category", "list", "--user", admin["username"], database_url=db_url, cwd=tmp_path)
    assert "hidden for an unknown category: 0 tickets" in again.stdout and "potholes" in again.stdout


def test_admin_dashboard_shows_the_hidden_category_notice_as_text(engine):
    from components.hidden_categories import HiddenCategoriesNotice
    from components.store import DashboardStore

    muni = uuid.uuid4()
    add_tickets(engine, [ticket_record(muni, category="<b>fire</b>")])
    notices = {}
    for role in ("admin", "manager"):
        store = DashboardStore(scope=Scope(municipality_id=muni, role=role), engine=engine)
        notices[role] = asyncio.run(HiddenCategoriesNotice(store=store)._notice())
    assert notices["admin"].visible and "1 ticket is hidden" in notices["admin"].object
    assert "&lt;b&gt;fire&lt;/b&gt;" in notices["admin"].object and "<b>" not in notices["admin"].object
    assert not notices["manager"].visible and notices["manager"].object == ""
