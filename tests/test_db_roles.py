"""Defence in depth (issue 14): a PostgreSQL role from `opsdash db grant` reads only its user's scope.

The roles run SQL of their own through psycopg (and psql), so these tests try
what an analyst with a database login could: plain and sneaky SELECTs, COPY,
aggregates, leaky functions, temporary tables shadowing the ones the policy
reads, the statistics views. The oracle is what the application shows the
same user (data.tickets.scoped_tickets), plus the list of tickets planted to
stay hidden. PostgreSQL only; under CI=true a missing server fails them.
"""
from __future__ import annotations

import importlib
import re
import shutil
import subprocess
import uuid
from pathlib import Path

import psycopg
import pytest
from psycopg import errors
from sqlalchemy import create_engine, insert, text, update
from sqlalchemy.pool import NullPool

from data.models import User
from data.scope import scope_for_user
from data.tickets import count_tickets, scoped_tickets
from data.users import create_user

from .helpers.db_roles import connect_as, grant, revoke, role_exists, role_ids, scoped_ids
from .helpers.servers import ROOT, run_opsdash
from .helpers.services import service_missing

pytestmark = pytest.mark.postgres

DASHBOARD_USERS = [("ward_councillor", 0), ("manager", 0), ("admin", 1)]
MIGRATION = "data.migrations.versions.0007_row_security"
SUMMARY_TABLES = ("ticket_summary_cells", "ticket_summary_days", "ticket_summary_deadlines",
                  "ticket_summary_responses", "ticket_summary_zones", "ticket_summary_marks",
                  "ticket_summary_ahead")


def granted_role(world, username: str, label: str, tmp_path: Path) -> str:
    role = world.new_role_name(label)
    result = grant(world, username, role, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    return role


@pytest.mark.parametrize("role_kind,municipality", DASHBOARD_USERS, ids=[r for r, _ in DASHBOARD_USERS])
def test_granted_role_reads_exactly_its_users_scope_whatever_sql_it_runs(rls_world, tmp_path, role_kind,
                                                                          municipality):
    username = rls_world.username(role_kind, municipality)
    expected = scoped_ids(rls_world, username)
    assert expected and not expected & rls_world.hidden_ids
    role = granted_role(rls_world, username, role_kind[:4], tmp_path)
    with connect_as(rls_world, role) as conn:
        assert role_ids(conn) == expected
        assert role_ids(conn, "SELECT * FROM tickets") == expected
        assert role_ids(conn, "TABLE tickets") == expected
        assert conn.execute("SELECT count(*) FROM tickets").fetchone()[0] == len(expected)
        # Asking for the hidden ones by name, by flag or by category finds nothing.
        assert role_ids(conn, "SELECT id FROM tickets WHERE is_sensitive OR category_key NOT IN "
                              "('water', 'electricity', 'roads', 'waste', 'sanitation', 'streetlights', "
                              "'parks', 'housing', 'other')") == set()
        assert conn.execute("SELECT count(*) FROM tickets WHERE search_text LIKE '%survivor%'").fetchone()[0] == 0
        by_category = conn.execute("SELECT category_key, count(*) FROM tickets GROUP BY 1").fetchall()
        assert sum(n for _, n in by_category) == len(expected)
        with conn.cursor().copy("COPY tickets (id) TO STDOUT") as copy:
            copied = {row[0] for row in copy.rows()}
        assert copied == expected


def test_granted_role_is_denied_every_other_table_and_any_change(rls_world, tmp_path):
    role = granted_role(rls_world, rls_world.username("manager"), "deny", tmp_path)
    some_id = next(iter(scoped_ids(rls_world, rls_world.username("manager"))))
    attempts = [
        "SELECT password_hash FROM users", "SELECT * FROM export_audit", "SELECT * FROM municipalities",
        "SELECT * FROM opsdash_db_roles", "SELECT * FROM alembic_version",
        "SELECT nextval('export_audit_id_seq')",
        f"UPDATE tickets SET is_sensitive = false WHERE id = '{some_id}'",
        "INSERT INTO ticket_categories (key, added_at) VALUES ('fire', now())",
        "DELETE FROM tickets", "CREATE TABLE public.stash (id uuid)",
        "CREATE VIEW public.all_tickets AS SELECT * FROM tickets",
        "CREATE FUNCTION public.peek() RETURNS int LANGUAGE sql AS 'SELECT 1'",
        # The summaries (migration 0009) count every municipality's tickets: no side door through them.
        *(f"SELECT * FROM {table}" for table in SUMMARY_TABLES),
        "SELECT opsdash_summary_zone(gen_random_uuid())",
        "SELECT opsdash_summary_advance(now())",
    ]
    with connect_as(rls_world, role) as conn:
        for statement in attempts:
            with pytest.raises(errors.InsufficientPrivilege):
                conn.execute(statement)


def test_disabling_the_user_or_moving_the_councillor_applies_at_the_next_statement(rls_world, tmp_path):
    muni = rls_world.seeded.municipalities[0]
    username = f"rls-move-{uuid.uuid4().hex[:8]}"
    create_user(rls_world.engine, username, "a-long-password", role="ward_councillor", municipality_id=muni["id"],
                ward_id=muni["wards"][0])
    role = granted_role(rls_world, username, "move", tmp_path)

    def set_user(**values) -> None:
        with rls_world.engine.begin() as conn:
            conn.execute(update(User).where(User.username == username).values(**values))

    with connect_as(rls_world, role) as conn:  # one session throughout: no reconnect needed
        assert role_ids(conn) == scoped_ids(rls_world, username)
        set_user(is_active=False)
        assert role_ids(conn) == set()
        set_user(is_active=True, ward_id=muni["wards"][1])
        moved = scoped_ids(rls_world, username)
        assert moved and role_ids(conn) == moved
        assert all(row[0] == muni["wards"][1] for row in conn.execute("SELECT DISTINCT ward_id FROM tickets"))
        for values in ({"ward_id": None}, {"ward_id": "  "}, {"role": "field_worker"}, {"role": "citizen"}):
            set_user(**values)  # each fails closed: nothing, not the whole municipality
            assert role_ids(conn) == set(), values
            set_user(role="ward_councillor", ward_id=muni["wards"][1])


def revoke_during_a_session(world, username: str, role: str, tmp_path: Path, prepare: str = "") -> str:
    """``opsdash db revoke`` while a session of ``role`` is open: its next read is denied. The CLI's stdout."""
    with connect_as(world, role) as conn:
        assert role_ids(conn)
        if prepare:
            conn.execute(prepare)
        result = revoke(world, username, cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        with pytest.raises(errors.InsufficientPrivilege):
            conn.execute("SELECT id FROM tickets")
    return result.stdout


def test_revoke_takes_the_roles_access_away_at_once_and_drops_it(rls_world, tmp_path):
    username = rls_world.username("manager", 1)
    role = granted_role(rls_world, username, "gone", tmp_path)
    assert f"dropped database role {role}" in revoke_during_a_session(rls_world, username, role, tmp_path)
    assert not role_exists(rls_world, role)
    with rls_world.engine.connect() as app:
        assert app.execute(text("SELECT count(*) FROM opsdash_db_roles WHERE role_name = :r"),
                           {"r": role}).scalar_one() == 0
    again = revoke(rls_world, username, cwd=tmp_path)
    assert again.returncode == 0 and "nothing to revoke" in again.stdout


def test_revoke_keeps_a_role_it_cannot_drop_but_takes_its_login(rls_world, tmp_path):
    username = rls_world.username("admin")
    role = granted_role(rls_world, username, "keep", tmp_path)
    # The role owns a temporary table while it is revoked, so PostgreSQL will not drop it.
    out = revoke_during_a_session(rls_world, username, role, tmp_path, prepare="CREATE TEMP TABLE scratch (n int)")
    assert f"disabled database role {role}" in out
    with rls_world.engine.connect() as app:
        assert app.execute(text("SELECT rolcanlogin FROM pg_roles WHERE rolname = :r"), {"r": role}).scalar_one() \
            is False


def test_a_leaky_function_in_the_roles_query_never_sees_a_hidden_row(rls_world, tmp_path):
    username = rls_world.username("ward_councillor")
    visible = scoped_ids(rls_world, username)
    role = granted_role(rls_world, username, "leak", tmp_path)
    with connect_as(rls_world, role) as conn:
        leaked: list[str] = []
        conn.add_notice_handler(lambda notice: leaked.append(notice.message_primary))
        # TEMP is PUBLIC's by default: this is a function any analyst can make. Tiny cost
        # tempts the planner to run it before everything else.
        conn.execute("CREATE FUNCTION pg_temp.peek(id uuid, description text) RETURNS boolean "
                     "LANGUAGE plpgsql COST 0.0000001 AS $$ BEGIN RAISE NOTICE '%', id; RETURN true; END $$")
        query = "SELECT id FROM tickets WHERE pg_temp.peek(id, description)"
        assert role_ids(conn, query) == visible
        assert leaked and set(leaked) <= visible and not set(leaked) & rls_world.hidden_ids
        leaked.clear()
        # A division by zero only for a hidden ticket would betray it: it never happens.
        assert conn.execute("SELECT count(*) FROM tickets WHERE 1 / (CASE WHEN is_sensitive OR "
                            "category_key = 'fire' THEN 0 ELSE 1 END) = 1").fetchone()[0] == len(visible)


def test_temporary_tables_named_like_the_policys_cannot_widen_the_scope(rls_world, tmp_path):
    username = rls_world.username("ward_councillor", 1)
    admin = rls_world.username("admin", 0)
    role = granted_role(rls_world, username, "temp", tmp_path)
    with connect_as(rls_world, role) as conn:
        conn.execute("CREATE TEMP TABLE opsdash_db_roles (role_name name, username varchar)")
        conn.execute("INSERT INTO pg_temp.opsdash_db_roles VALUES (current_user, %s)", (admin,))
        conn.execute("CREATE TEMP TABLE ticket_categories (key text)")
        conn.execute("INSERT INTO pg_temp.ticket_categories VALUES ('fire'), ('gbv')")
        conn.execute("CREATE TEMP TABLE users AS SELECT %s::varchar AS username, 'admin'::varchar AS role, "
                     "true AS is_active, NULL::varchar AS ward_id", (admin,))
        assert role_ids(conn) == scoped_ids(rls_world, username)
        # The scope function answers only for the caller's own role.
        other = granted_role(rls_world, admin, "other", tmp_path)
        assert conn.execute("SELECT count(*) FROM opsdash_db_scope(%s)", (other,)).fetchone()[0] == 0


def test_statistics_views_show_the_role_nothing_of_tickets(rls_world, tmp_path):
    views = ("pg_stats", "pg_stats_ext", "pg_stats_ext_exprs")
    with psycopg.connect(rls_world.database.admin_url.replace("+psycopg", "")) as superuser:
        assert superuser.execute("SELECT count(*) FROM pg_stats WHERE tablename = 'tickets' "
                                 "AND most_common_vals IS NOT NULL").fetchone()[0] > 0  # there is something to hide
    role = granted_role(rls_world, rls_world.username("ward_councillor"), "stats", tmp_path)
    with connect_as(rls_world, role) as conn:
        for view in views:
            assert conn.execute(f"SELECT count(*) FROM {view} WHERE tablename = 'tickets'").fetchone()[0] == 0, view
        with pytest.raises(errors.InsufficientPrivilege):
            conn.execute("SELECT * FROM pg_statistic")


def test_the_app_role_owns_tickets_and_still_reads_every_row(rls_world):
    with rls_world.engine.connect() as conn:
        row = conn.execute(text(
            "SELECT c.relrowsecurity, c.relforcerowsecurity, pg_get_userbyid(c.relowner) = current_user, "
            "r.rolsuper, r.rolbypassrls FROM pg_class c JOIN pg_roles r ON r.rolname = current_user "
            "WHERE c.oid = 'tickets'::regclass")).one()
        assert tuple(row) == (True, False, True, False, False)  # RLS on, not forced, owner, no bypass
        total = conn.execute(text("SELECT count(*) FROM tickets")).scalar_one()
    assert total == rls_world.seeded.tickets + len(rls_world.hidden_ids)


def test_psql_as_the_granted_role_counts_exactly_the_scoped_rows(rls_world, tmp_path):
    psql = shutil.which("psql")
    if psql is None:
        service_missing("psql (the PostgreSQL client) is not on PATH")
    username = rls_world.username("ward_councillor", 0, 1)
    role = granted_role(rls_world, username, "psql", tmp_path)
    db = rls_world.database
    result = subprocess.run(
        [psql, "-X", "-A", "-t", "-h", "127.0.0.1", "-U", role, "-d", db.name, "-v", "ON_ERROR_STOP=1",
         "-c", "SELECT count(*) FROM tickets", "-c", "SELECT id FROM tickets ORDER BY id"],
        capture_output=True, text=True, timeout=60, env={"PATH": "/usr/bin:/bin", "PGCONNECT_TIMEOUT": "10"})
    assert result.returncode == 0, result.stderr
    count, *ids = result.stdout.split()
    expected = scoped_ids(rls_world, username)
    assert int(count) == len(expected) and set(ids) == expected


def test_a_password_is_hashed_before_it_reaches_the_server_and_names_are_quoted(rls_world, tmp_path):
    # create_user refuses a quote in a username; a row written by another system may have one.
    username = f"rls.o'brien-{uuid.uuid4().hex[:6]}"
    with rls_world.engine.begin() as conn:
        conn.execute(insert(User).values(username=username, role="manager", is_active=True,
                                         municipality_id=uuid.UUID(rls_world.seeded.municipalities[0]["id"])))
    hostile = rls_world.new_role_name('x"; DROP TABLE tickets; --')
    password = "pa'ss\"word; DROP ROLE postgres; --"
    result = grant(rls_world, username, hostile, password, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    with psycopg.connect(rls_world.database.admin_url.replace("+psycopg", "")) as superuser:
        stored = superuser.execute("SELECT rolpassword FROM pg_authid WHERE rolname = %s", (hostile,)).fetchone()[0]
        assert stored.startswith("SCRAM-SHA-256$") and "DROP" not in stored
        assert superuser.execute("SELECT to_regclass('tickets') IS NOT NULL").fetchone()[0]
    with connect_as(rls_world, hostile) as conn:
        assert role_ids(conn) == scoped_ids(rls_world, username)
    # The default name: sanitised, with a hash of the exact username, and a role of its own.
    from data.db_roles import default_role_name

    result = grant(rls_world, username, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert default_role_name(username) in result.stdout
    assert re.fullmatch(r"opsdash_rls_o_brien_[0-9a-f]{6}_[0-9a-f]{8}", default_role_name(username))


def test_default_role_names_are_safe_identifiers_and_distinct():
    from data.db_roles import default_role_name

    names = [default_role_name(u) for u in ("thandi", "a.b", "a_b", "A_b", "x" * 150, "é@x")]
    assert names[0] == "opsdash_thandi"
    assert len(set(names)) == len(names)
    assert all(re.fullmatch(r"opsdash_[a-z0-9_]+", n) and len(n.encode()) <= 63 for n in names)


@pytest.mark.parametrize("case", ["app role", "foreign role", "other user's role", "no dashboard", "unknown user"])
def test_grant_refuses_to_take_over_a_role_or_to_serve_a_user_without_a_dashboard(rls_world, tmp_path, case):
    manager, councillor = rls_world.username("manager"), rls_world.username("ward_councillor")
    username, role, message = manager, None, ""
    if case == "app role":
        role, message = rls_world.database.app_role, "already exists and was not made by `opsdash db grant`"
    elif case == "foreign role":
        role = rls_world.new_role_name("dba")
        with rls_world.engine.begin() as conn:
            conn.execute(text(f'CREATE ROLE "{role}" LOGIN'))
        message = "already exists and was not made by `opsdash db grant`"
    elif case == "other user's role":
        role = granted_role(rls_world, councillor, "mine", tmp_path)
        message = "is mapped to another OpsDash user"
    elif case == "no dashboard":
        muni = rls_world.seeded.municipalities[0]["id"]
        username = next(u["username"] for u in rls_world.seeded.users
                        if u["role"] == "field_worker" and u["municipality_id"] == muni)
        role, message = rls_world.new_role_name("fw"), "no access to the operations dashboard"
    else:
        username, role, message = "nobody-at-all", rls_world.new_role_name("nobody"), "unknown user"
    result = grant(rls_world, username, role, "a-long-password", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.startswith("opsdash: error: ") and message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    if case in ("no dashboard", "unknown user"):
        assert not role_exists(rls_world, role)


def test_grant_is_refused_and_rolled_back_when_public_may_create_in_the_schema(rls_world, tmp_path):
    role = rls_world.new_role_name("pub")
    with rls_world.engine.begin() as conn:
        conn.execute(text("GRANT CREATE ON SCHEMA public TO PUBLIC"))
    try:
        result = grant(rls_world, rls_world.username("manager"), role, cwd=tmp_path)
    finally:
        with rls_world.engine.begin() as conn:
            conn.execute(text("REVOKE CREATE ON SCHEMA public FROM PUBLIC"))
    assert result.returncode == 2 and "CREATE on schema public" in result.stderr
    assert not role_exists(rls_world, role)


def test_print_sql_shows_the_statements_and_changes_nothing(rls_world, tmp_path):
    role = rls_world.new_role_name("dba")
    result = grant(rls_world, rls_world.username("manager"), role, "", "--print-sql", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert f'CREATE ROLE "{role}" LOGIN NOSUPERUSER' in result.stdout
    assert f'GRANT SELECT ON TABLE "public"."tickets", "public"."ticket_categories" TO "{role}";' in result.stdout
    assert not role_exists(rls_world, role)


def test_db_commands_on_sqlite_say_in_one_line_that_there_is_no_such_wall(tmp_path):
    url = f"sqlite:///{tmp_path / 'demo.sqlite3'}"
    for args in (("grant", "someone"), ("revoke", "someone")):
        result = run_opsdash("db", *args, database_url=url, cwd=tmp_path, stdin="")
        assert result.returncode == 2
        assert result.stderr.startswith("opsdash: error: SQLite has no database roles or row-level security")
        assert len(result.stderr.strip().splitlines()) == 1


def test_security_doc_quotes_the_sql_the_migration_runs():
    migration = importlib.import_module(MIGRATION)
    doc = (ROOT / "docs" / "security.md").read_text(encoding="utf-8")
    for statement in (migration.MAPPING_TABLE_SQL, migration.SCOPE_FUNCTION_SQL.format(schema="public"),
                      migration.POLICY_SQL, *migration.ENABLE_SQL):
        assert statement in doc, statement.splitlines()[0]


def test_a_ticketing_system_role_keeps_the_summaries_without_any_right_on_them(rls_world):
    """The ticketing system writes with a role of its own (BYPASSRLS, docs/security.md): the summaries'
    triggers run as their owner, so its writes keep them right, and it still cannot read them."""
    writer = rls_world.new_role_name("writer")
    admin = create_engine(rls_world.database.admin_url, isolation_level="AUTOCOMMIT", poolclass=NullPool)
    with admin.connect() as conn:
        conn.execute(text(f'CREATE ROLE "{writer}" LOGIN BYPASSRLS'))
        conn.execute(text(f'GRANT SELECT, INSERT, UPDATE, DELETE ON tickets TO "{writer}"'))
    admin.dispose()
    muni = rls_world.seeded.municipalities[0]
    scope = scope_for_user(rls_world.engine, rls_world.username("manager"))
    before = count_tickets(rls_world.engine, scope)
    ticket_id = uuid.uuid4()
    with connect_as(rls_world, writer) as conn:
        conn.execute("INSERT INTO tickets (id, tenant_id, ward_id, tracking_number, category, status, severity, "
                     "description, language, is_sensitive, created_at) VALUES (%s, %s, %s, %s, 'Water', 'open', "
                     "'low', '', 'en', false, now())",
                     (ticket_id, muni["id"], muni["wards"][0], f"TS-{ticket_id.hex[:12]}"))
        assert count_tickets(rls_world.engine, scope) == before + 1
        conn.execute("UPDATE tickets SET is_sensitive = true WHERE id = %s", (ticket_id,))
        assert count_tickets(rls_world.engine, scope) == before
        conn.execute("DELETE FROM tickets WHERE id = %s", (ticket_id,))
        for table in SUMMARY_TABLES:
            with pytest.raises(errors.InsufficientPrivilege):
                conn.execute(f"SELECT * FROM {table}")
    assert count_tickets(rls_world.engine, scope) == len(scoped_tickets(rls_world.engine, scope, columns=("id",)))
