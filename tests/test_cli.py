"""The ``opsdash`` command line, run as a real process against fresh SQLite and PostgreSQL databases."""
from __future__ import annotations

import json
import uuid
from datetime import timedelta

import pytest
from alembic.script import ScriptDirectory
from sqlalchemy import func, select

from data.db import _alembic_config, get_engine
from data.models import Role, Ticket, User
from data.users import verify_password

from .helpers.servers import run_opsdash

pytestmark = pytest.mark.slow


def head_revision(engine) -> str:
    return ScriptDirectory.from_config(_alembic_config(engine)).get_current_head()


def ok(result) -> str:
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    return result.stdout


def one_line_error(result) -> str:
    """The CLI's contract for a bad value: exit code 2, one line on stderr, no traceback."""
    assert result.returncode == 2, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("opsdash: error: "), result.stderr
    return lines[0]


def seed_json(db_url: str, cwd, *extra: str) -> dict:
    return json.loads(ok(run_opsdash("seed", "--json", *extra, database_url=db_url, cwd=cwd)))


def test_init_db_is_idempotent_and_reaches_the_head_revision(empty_db_url, tmp_path):
    first = ok(run_opsdash("init-db", database_url=empty_db_url, cwd=tmp_path))
    second = ok(run_opsdash("init-db", database_url=empty_db_url, cwd=tmp_path))
    assert first == second
    head = head_revision(get_engine(empty_db_url))
    assert first.strip() == f"database ready at revision {head}"


def test_seed_json_has_exactly_the_documented_shape(empty_db_url, tmp_path):
    out = seed_json(empty_db_url, tmp_path, "--tickets", "300", "--wards", "3", "--municipalities", "2",
                    "--random-seed", "4")
    assert set(out) == {"municipalities", "users", "tickets"}
    assert out["tickets"] == 300
    assert len(out["municipalities"]) == 2
    for muni in out["municipalities"]:
        assert set(muni) == {"id", "name", "wards"}
        uuid.UUID(muni["id"])
        assert len(muni["wards"]) == 3 and all(isinstance(w, str) for w in muni["wards"])
        users = [u for u in out["users"] if u["municipality_id"] == muni["id"]]
        assert {u["role"] for u in users} == {r.value for r in Role}
        councillor_wards = {u["ward_id"] for u in users if u["role"] == "ward_councillor"}
        assert councillor_wards == set(muni["wards"])
    for user in out["users"]:
        assert set(user) == {"username", "password", "role", "municipality_id", "ward_id"}
        uuid.UUID(user["municipality_id"])
        assert isinstance(user["password"], str) and len(user["password"]) >= 8
    engine = get_engine(empty_db_url)
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(Ticket)).scalar_one() == 300
        hashes = dict(conn.execute(select(User.username, User.password_hash)).all())
    some = out["users"][0]
    assert verify_password(hashes[some["username"]], some["password"])


def ticket_content(db_url: str) -> list[tuple]:
    """Tickets with times as offsets (seeding is relative to 'now', which moves between runs)."""
    with get_engine(db_url).connect() as conn:
        rows = conn.execute(select(*Ticket.__table__.columns).order_by(Ticket.id)).mappings().all()
    latest = max(r["created_at"] for r in rows)
    content = []
    for r in rows:
        times = tuple(
            None if r[c] is None else round((r[c] - latest) / timedelta(milliseconds=1))
            for c in ("created_at", "sla_response_deadline", "sla_resolution_deadline", "first_responded_at",
                      "resolved_at", "escalated_at", "updated_at")
        )
        rest = tuple(str(r[c]) for c in ("id", "tenant_id", "ward_id", "category", "status", "severity",
                                          "description", "address", "language", "is_sensitive"))
        content.append(rest + (r["tracking_number"][-7:],) + times)
    return content


def test_seed_with_a_random_seed_is_deterministic_on_two_fresh_databases(empty_db_url, tmp_path):
    other = f"sqlite:///{tmp_path / 'other.sqlite3'}"
    args = ("--tickets", "500", "--wards", "4", "--random-seed", "77")
    first, second = seed_json(empty_db_url, tmp_path, *args), seed_json(other, tmp_path, *args)
    assert first == second
    a, b = ticket_content(empty_db_url), ticket_content(other)
    assert len(a) == 500 and a == b
    different = seed_json(f"sqlite:///{tmp_path / 'third.sqlite3'}", tmp_path, "--tickets", "500", "--wards", "4",
                          "--random-seed", "78")
    assert different["users"] != first["users"]


@pytest.fixture
def seeded(empty_db_url, tmp_path) -> tuple[str, dict]:
    return empty_db_url, seed_json(empty_db_url, tmp_path, "--tickets", "0", "--wards", "2", "--municipalities", "1")


def test_user_add_reads_the_password_from_stdin_and_stores_only_an_argon2_hash(seeded, tmp_path):
    db_url, out = seeded
    muni = out["municipalities"][0]
    password = "correct horse battery"
    result = run_opsdash("user", "add", "thandi", "--role", "ward_councillor", "--municipality", muni["id"],
                         "--ward", muni["wards"][1], database_url=db_url, cwd=tmp_path, stdin=password + "\n")
    assert ok(result).strip() == "created user thandi (ward_councillor)"
    assert password not in result.stdout + result.stderr
    with get_engine(db_url).connect() as conn:
        user = conn.execute(select(User).where(User.username == "thandi")).one()
    assert user.password_hash.startswith("$argon2id$") and password not in user.password_hash
    assert verify_password(user.password_hash, password) and not verify_password(user.password_hash, "wrong one!")
    assert (user.ward_id, str(user.municipality_id)) == (muni["wards"][1], muni["id"])


@pytest.mark.parametrize("case,message", [
    ("bad role", "unknown role 'overlord'"),
    ("unknown municipality", "no municipality with id"),
    ("not a uuid", "not a municipality id"),
    ("councillor without ward", "a ward councillor needs --ward"),
    ("ward of no municipality", "no ward 'NOPE-W001'"),
    ("short password", "at least 8 characters"),
    ("empty stdin", "at least 8 characters"),
    ("bad username", "a username is"),
    ("duplicate", "already exists"),
])
def test_user_add_rejects_bad_input_with_one_line_and_exit_code_2(seeded, tmp_path, case, message):
    db_url, out = seeded
    muni = out["municipalities"][0]["id"]
    name, role, password, extra = "newuser", "manager", "long-enough-password\n", []
    if case == "bad role":
        role = "overlord"
    elif case == "unknown municipality":
        muni = str(uuid.uuid4())
    elif case == "not a uuid":
        muni = "'; DROP TABLE users; --"
    elif case == "councillor without ward":
        role = "ward_councillor"
    elif case == "ward of no municipality":
        extra = ["--ward", "NOPE-W001"]
    elif case == "short password":
        password = "short\n"
    elif case == "empty stdin":
        password = ""
    elif case == "bad username":
        name = "<script>"
    elif case == "duplicate":
        name = out["users"][0]["username"]
    result = run_opsdash("user", "add", name, "--role", role, "--municipality", muni, *extra,
                         database_url=db_url, cwd=tmp_path, stdin=password)
    assert message in one_line_error(result)
    assert password.strip() == "" or password.strip() not in result.stderr


@pytest.mark.parametrize("args,message", [
    (("--tickets", "-1"), "--tickets must be between"),
    (("--wards", "0"), "--wards must be between"),
    (("--municipalities", "51"), "--municipalities must be between"),
])
def test_seed_rejects_out_of_range_sizes_with_one_line(tmp_path, args, message):
    result = run_opsdash("seed", *args, database_url=f"sqlite:///{tmp_path / 's.sqlite3'}", cwd=tmp_path)
    assert message in one_line_error(result)


def test_seed_help_says_when_a_large_load_locks_the_tickets_table(tmp_path):
    from data.seed import BULK_LOAD_ROWS

    help_text = " ".join(ok(run_opsdash("seed", "--help", database_url=None, cwd=tmp_path)).split())
    assert f"{BULK_LOAD_ROWS:,} tickets or more into an empty tickets table" in help_text
    assert "locked until the load commits" in help_text and "already has tickets the indexes are kept" in help_text


def test_panel_parses_the_command_line_opsdash_serve_passes_and_it_names_no_secret():
    """The cookie secret reaches Panel through the environment (issue 15): Panel's parser gets none."""
    import argparse

    from panel.command.serve import Serve

    from dashboard_app.cli import panel_serve_argv

    parser = argparse.ArgumentParser()
    Serve(parser=parser)
    argv = panel_serve_argv("127.0.0.1", 5006, [])
    assert argv[:2] == ["panel", "serve"]
    parsed = parser.parse_args(argv[2:])
    assert parsed.cookie_secret is None and parsed.oauth_provider == "opsdash"
