"""PostgreSQL login roles for analysts, walled in by row-level security (issue 14).

``grant_database_role`` makes (or updates) a LOGIN role mapped to an OpsDash
user in ``opsdash_db_roles``; migration 0007's policy on ``tickets`` then lets
that role read exactly the tickets the user's Scope allows, with the
sensitivity rule, whatever SQL it runs. The role gets SELECT on ``tickets``
and ``ticket_categories`` (the policy reads it), EXECUTE on the scope
function, and nothing else: never ``users`` (password hashes) or
``export_audit``. A grant that would leave the role more than that (because
PUBLIC has been given CREATE on the schema or rights on another table) is
refused and rolled back, so the wall is never weaker than documented.

Role names are cluster-wide and come from people: every statement is built
with ``psycopg.sql`` (quoted identifiers and literals), never by formatting
names into SQL. A password never reaches the server in plain text: libpq
hashes it (SCRAM-SHA-256) on this side, as psql's ``\\password`` does.
"""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from typing import Iterator

from sqlalchemy import Connection, Engine

from .errors import InvalidValue, NotFound, OpsDashError
from .scope import scope_for_user
from .users import MIN_PASSWORD_LENGTH

#: What the policy needs besides ``tickets``: the known categories it compares keys with.
READABLE_TABLES = ("tickets", "ticket_categories")
SCOPE_FUNCTION = "opsdash_db_scope(name)"
ROLE_PREFIX = "opsdash_"
#: PostgreSQL's longest identifier (NAMEDATALEN - 1), in bytes.
MAX_ROLE_NAME = 63
#: Attributes a mapped role always has: it can log in and do nothing special.
ROLE_ATTRIBUTES = "LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOINHERIT NOREPLICATION NOBYPASSRLS"


class DatabaseRoleError(OpsDashError):
    """PostgreSQL refused a role statement (a message a DBA can act on)."""


@dataclass
class RolePlan:
    """The statements for one role, and what they do; executed or printed for a DBA."""

    role_name: str
    username: str
    action: str  # "created", "updated", "dropped", "disabled"
    statements: list = field(default_factory=list)  # psycopg.sql.Composable
    #: DROP ROLE, run last in a savepoint: if PostgreSQL refuses, the role loses LOGIN instead.
    drop: object | None = None
    #: Printed after the statements (for example: how to set a password).
    notes: list[str] = field(default_factory=list)


def default_role_name(username: str) -> str:
    """``opsdash_<username>``, lower case, only ``[a-z0-9_]``, at most 63 bytes.

    When anything had to change (case, a ``.`` or ``@``, the length), a short hash
    of the exact username is appended, so ``a.b`` and ``a_b`` get different roles.
    """
    base = re.sub(r"[^a-z0-9_]", "_", username.lower())
    name = ROLE_PREFIX + base
    if base == username and len(name) <= MAX_ROLE_NAME:
        return name
    digest = hashlib.sha256(username.encode("utf-8")).hexdigest()[:8]
    return f"{ROLE_PREFIX}{base[:MAX_ROLE_NAME - len(ROLE_PREFIX) - 9]}_{digest}"


def check_role_name(name: str) -> str:
    if not isinstance(name, str) or not name or "\x00" in name or len(name.encode("utf-8")) > MAX_ROLE_NAME:
        raise InvalidValue(f"a role name is 1 to {MAX_ROLE_NAME} bytes (got {str(name)[:80]!r})")
    if name.lower().startswith("pg_"):
        raise InvalidValue("role names starting with pg_ are reserved by PostgreSQL")
    return name


def _require_postgresql(engine: Engine) -> None:
    if engine.dialect.name != "postgresql":
        raise InvalidValue(
            "SQLite has no database roles or row-level security, so there is no wall to put an analyst "
            "behind: `opsdash db` needs PostgreSQL (OPSDASH_DATABASE_URL)")


def _driver(conn: Connection):
    """The psycopg connection under ``conn`` (same transaction)."""
    return conn.connection.driver_connection


def _one(conn: Connection, query: str, *params):
    with _driver(conn).cursor() as cur:
        cur.execute(query, params)
        return cur.fetchone()


def _context(conn: Connection) -> tuple[str, str]:
    database, schema = _one(conn, "SELECT current_database(), current_schema()")
    if _one(conn, "SELECT to_regclass('opsdash_db_roles')")[0] is None:
        raise OpsDashError("the database has no opsdash_db_roles table: run `opsdash init-db` first")
    return database, schema


def _access_statements(role: str, database: str, schema: str, give: bool) -> list:
    """GRANT (or REVOKE) everything a mapped role may have, and nothing else."""
    from psycopg import sql

    verb, prep, rights = ("GRANT", "TO", "SELECT") if give else ("REVOKE", "FROM", "ALL")
    ident = sql.Identifier(role)
    tables = sql.SQL(", ").join(sql.Identifier(schema, table) for table in READABLE_TABLES)
    return [
        sql.SQL(f"{verb} CONNECT ON DATABASE {{}} {prep} {{}}").format(sql.Identifier(database), ident),
        sql.SQL(f"{verb} USAGE ON SCHEMA {{}} {prep} {{}}").format(sql.Identifier(schema), ident),
        sql.SQL(f"{verb} {rights} ON TABLE {{}} {prep} {{}}").format(tables, ident),
        sql.SQL(f"{verb} EXECUTE ON FUNCTION {{}}.{SCOPE_FUNCTION} {prep} {{}}").format(sql.Identifier(schema), ident),
    ]


def plan_grant(conn: Connection, username: str, role_name: str | None = None,
               password: str | None = None) -> RolePlan:
    """The statements that make ``role_name`` (default: from the username) read as ``username``.

    ``password``: hashed here and set; None or "" leaves an existing role's password
    as it is and gives a new role none (it can then sign in only where pg_hba.conf
    trusts it: trust, peer, cert...).
    """
    from psycopg import sql

    role = check_role_name(role_name) if role_name else default_role_name(username)
    if password and len(password) < MIN_PASSWORD_LENGTH:
        raise InvalidValue(f"a password needs at least {MIN_PASSWORD_LENGTH} characters")
    database, schema = _context(conn)
    mapped = _one(conn, "SELECT username FROM opsdash_db_roles WHERE role_name = %s", role)
    exists = _one(conn, "SELECT rolsuper OR rolbypassrls FROM pg_roles WHERE rolname = %s", role)
    if mapped and mapped[0] != username:
        raise InvalidValue(f"the role {role} is mapped to another OpsDash user; revoke it first or choose --role")
    if exists and not mapped:
        # Never take over a role made for something else (the app role, a DBA's own login).
        raise InvalidValue(f"a PostgreSQL role {role} already exists and was not made by `opsdash db grant`; "
                           "choose another name with --role")
    if exists and exists[0]:
        raise InvalidValue(f"the role {role} is a superuser or bypasses row-level security: refusing to map it")
    ident = sql.Identifier(role)
    secret = sql.SQL("")
    if password:
        hashed = _driver(conn).pgconn.encrypt_password(password.encode("utf-8"), role.encode("utf-8"),
                                                       b"scram-sha-256")
        secret = sql.SQL(" PASSWORD {}").format(sql.Literal(hashed.decode("ascii")))
    elif not exists:
        secret = sql.SQL(" PASSWORD NULL")
    plan = RolePlan(role, username, "updated" if exists else "created")
    plan.statements.append(sql.SQL("{} ROLE {} {}{}").format(
        sql.SQL("ALTER" if exists else "CREATE"), ident, sql.SQL(ROLE_ATTRIBUTES), secret))
    plan.statements.append(sql.SQL(
        "INSERT INTO {}.opsdash_db_roles (role_name, username) VALUES ({}, {}) "
        "ON CONFLICT (role_name) DO UPDATE SET granted_at = now()").format(
        sql.Identifier(schema), sql.Literal(role), sql.Literal(username)))
    plan.statements.extend(_access_statements(role, database, schema, give=True))
    if not password and not exists:
        plan.notes.append(f"{role} has no password: set one with psql's \\password {ident.as_string(None)} "
                          "or run this command again with the password on stdin")
    return plan


def _extra_access(conn: Connection, role: str) -> list[str]:
    """What ``role`` may do in this schema beyond reading tickets and ticket_categories."""
    with _driver(conn).cursor() as cur:
        cur.execute(
            """
            SELECT 'CREATE on schema ' || n.nspname FROM pg_namespace n
            WHERE n.oid = current_schema()::regnamespace AND has_schema_privilege(%(r)s, n.oid, 'CREATE')
            UNION ALL
            SELECT 'rights on ' || c.relname FROM pg_class c
            WHERE c.relnamespace = current_schema()::regnamespace AND c.relkind IN ('r', 'p', 'v', 'm', 'f', 'S')
              AND CASE WHEN c.relkind = 'S' THEN has_sequence_privilege(%(r)s, c.oid, 'USAGE, SELECT, UPDATE')
                  ELSE has_table_privilege(%(r)s, c.oid, 'INSERT, UPDATE, DELETE, TRUNCATE, REFERENCES, TRIGGER')
                       OR (c.relname <> ALL (%(readable)s) AND has_any_column_privilege(%(r)s, c.oid, 'SELECT'))
                  END
            UNION ALL
            -- a SECURITY DEFINER function runs with its owner's rights: only ours may be callable
            SELECT 'EXECUTE on security definer function ' || p.oid::regprocedure::text FROM pg_proc p
            WHERE p.pronamespace = current_schema()::regnamespace AND p.prosecdef
              AND p.oid <> 'opsdash_db_scope(name)'::regprocedure
              AND has_function_privilege(%(r)s, p.oid, 'EXECUTE')
            """,
            {"r": role, "readable": list(READABLE_TABLES)},
        )
        return [row[0] for row in cur.fetchall()]


def grant_database_role(engine: Engine, username: str, role_name: str | None = None,
                        password: str | None = None, *, execute: bool = True) -> RolePlan:
    """Create or update the role; with ``execute=False`` only plan it (nothing changes).

    Runs in one transaction: a refusal at any step (a privilege PostgreSQL denies,
    or more access than documented, see ``_extra_access``) leaves everything as it was.
    """
    _require_postgresql(engine)
    scope_for_user(engine, username)  # unknown, disabled or no dashboard role: NotAuthorized, nothing made
    with engine.begin() as conn:  # print-only plans just read; a refusal raises: rolled back
        plan = plan_grant(conn, username, role_name, password)
        if not execute:
            return plan
        _run(conn, plan)
        extra = _extra_access(conn, plan.role_name)
        if extra:
            raise DatabaseRoleError(
                f"refused: {plan.role_name} would also have {', '.join(extra)} (granted to PUBLIC?); "
                "revoke those from PUBLIC first (docs/security.md)")
    return plan


def plan_revoke(conn: Connection, username: str, role_name: str | None = None) -> list[RolePlan]:
    """For each role mapped to ``username`` (or just ``role_name``): unmap, revoke, drop."""
    from psycopg import sql

    database, schema = _context(conn)
    with _driver(conn).cursor() as cur:
        cur.execute("SELECT r.role_name, p.rolname IS NOT NULL FROM opsdash_db_roles r "
                    "LEFT JOIN pg_roles p ON p.rolname = r.role_name "
                    "WHERE r.username = %s AND (%s::name IS NULL OR r.role_name = %s) ORDER BY 1",
                    (username, role_name, role_name))
        rows = cur.fetchall()
    plans = []
    for role, exists in rows:
        plan = RolePlan(role, username, "dropped")
        plan.statements.append(sql.SQL("DELETE FROM {}.opsdash_db_roles WHERE role_name = {}").format(
            sql.Identifier(schema), sql.Literal(role)))
        if exists:
            plan.statements.extend(_access_statements(role, database, schema, give=False))
            plan.drop = sql.SQL("DROP ROLE {}").format(sql.Identifier(role))
            plan.notes.append(f"if DROP ROLE fails (the role owns objects or has rights elsewhere): "
                              f"ALTER ROLE {sql.Identifier(role).as_string(None)} NOLOGIN")
        plans.append(plan)
    return plans


def revoke_database_role(engine: Engine, username: str, role_name: str | None = None, *,
                         execute: bool = True) -> list[RolePlan]:
    """Unmap and drop the user's roles at once (their next statement reads nothing).

    A role PostgreSQL will not drop (it owns objects or holds rights in another
    database) loses LOGIN instead (``action == "disabled"``). Roles never mapped by
    ``grant_database_role`` are never touched. Returns [] when nothing is mapped.
    """
    _require_postgresql(engine)
    if role_name:
        check_role_name(role_name)
    with engine.begin() as conn:  # print-only plans just read; a refusal raises: rolled back
        plans = plan_revoke(conn, username, role_name)
        if not plans and _one(conn, "SELECT 1 FROM users WHERE username = %s", username) is None:
            raise NotFound(f"no OpsDash user {username!r}")
        if not execute:
            return plans
        for plan in plans:
            _run(conn, plan)
    return plans


def _run(conn: Connection, plan: RolePlan) -> None:
    import psycopg
    from psycopg import sql

    driver = _driver(conn)
    try:
        for statement in plan.statements:
            driver.execute(statement)
    except psycopg.Error as exc:
        raise _role_error(exc, plan) from None
    if plan.drop is None:
        return
    try:
        with driver.transaction():  # a savepoint: a refused DROP keeps the revokes above
            driver.execute(plan.drop)
    except psycopg.Error:
        driver.execute(sql.SQL("ALTER ROLE {} NOLOGIN").format(sql.Identifier(plan.role_name)))
        plan.action = "disabled"


def _role_error(exc: Exception, plan: RolePlan) -> DatabaseRoleError:
    detail = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
    hint = ""
    if getattr(exc, "sqlstate", None) == "42501":  # insufficient_privilege
        hint = ("; the application's database role needs CREATEROLE, or print the SQL with "
                "`opsdash db grant --print-sql` and have a DBA run it")
    return DatabaseRoleError(f"PostgreSQL refused to change role {plan.role_name} ({detail}){hint}")


def render(engine: Engine, plans: list[RolePlan]) -> Iterator[str]:
    """The plans as SQL text a DBA can review and run in psql, one statement a line."""
    with engine.connect() as conn:
        driver = _driver(conn)
        yield "BEGIN;"
        for plan in plans:
            for statement in plan.statements + ([plan.drop] if plan.drop is not None else []):
                yield statement.as_string(driver) + ";"
        yield "COMMIT;"
        for plan in plans:
            for note in plan.notes:
                yield f"-- {note}"


__all__ = ["DatabaseRoleError", "READABLE_TABLES", "RolePlan", "check_role_name", "default_role_name",
           "grant_database_role", "render", "revoke_database_role"]
