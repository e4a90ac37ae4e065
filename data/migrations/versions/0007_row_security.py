"""row-level security on tickets for analysts' own database roles (issue 14, PostgreSQL only)

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01

Analysts often get a PostgreSQL login of their own. ``opsdash db grant USER``
(data.db_roles) makes one and records it here; this migration makes
PostgreSQL itself give such a role only the tickets that user's Scope allows,
whatever SQL it runs:

- ``opsdash_db_roles``: database role name -> OpsDash username (the users
  row decides, at every statement, what the role sees).
- ``opsdash_db_scope(role_name)``: SECURITY DEFINER, owned by the role that
  runs the migrations (the app role), so an analyst learns their scope without
  any privilege on ``users`` (password hashes). It answers only for a role the
  calling session is (or is a member of), only while the user is active and
  has a dashboard role, a councillor only with a ward: otherwise no row, and
  the policy then matches nothing (fail closed).
- ``tickets`` gets ROW LEVEL SECURITY with one SELECT policy: the scope's
  municipality and ward AND the sensitivity rule of data.tickets.visible_ticket.

The app role owns ``tickets``: owners bypass row security unless the table is
FORCEd, and it is not, so the application reads and writes as before. Every
other role without BYPASSRLS now sees no ticket unless the policy lets it (a
ticketing system writing with a role of its own needs BYPASSRLS or its own
policies: docs/security.md). SQLite has no roles: nothing to do there.

docs/security.md quotes these statements; tests/test_db_roles.py checks it does.
"""
from __future__ import annotations

from alembic import op

from data.sensitivity import DEFAULT_CATEGORIES

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

MAPPING_TABLE_SQL = """\
CREATE TABLE opsdash_db_roles (
    role_name name PRIMARY KEY,
    username varchar(150) NOT NULL REFERENCES users (username) ON DELETE CASCADE ON UPDATE CASCADE,
    granted_at timestamptz NOT NULL DEFAULT now()
)"""

# pg_temp comes last on purpose: left out, it is searched *first* for tables, and a
# temporary table named users or opsdash_db_roles (any role may make one) would answer.
# The ward check mirrors data.scope.Scope: a councillor whose ward is blank sees nothing.
SCOPE_FUNCTION_SQL = """\
CREATE FUNCTION opsdash_db_scope(role_name name)
RETURNS TABLE (municipality_id uuid, ward_id varchar, whole_municipality boolean)
LANGUAGE sql STABLE SECURITY DEFINER ROWS 1
SET search_path = pg_catalog, {schema}, pg_temp
AS $fn$
    SELECT u.municipality_id,
           CASE WHEN u.role = 'ward_councillor' THEN u.ward_id END,
           u.role IN ('admin', 'manager')
    FROM opsdash_db_roles AS r
    JOIN users AS u ON u.username = r.username
    JOIN municipalities AS m ON m.id = u.municipality_id
    WHERE r.role_name = opsdash_db_scope.role_name
      AND pg_has_role(session_user, opsdash_db_scope.role_name, 'MEMBER')
      AND u.is_active
      AND (u.role IN ('admin', 'manager')
           OR (u.role = 'ward_councillor' AND opsdash_key(coalesce(u.ward_id, '')) <> ''))
$fn$"""

# Uncorrelated scalar subqueries: PostgreSQL runs each once per statement (an InitPlan),
# not once per ticket, and tenant_id = $1 can use the tenant indexes. No row -> NULL ->
# no ticket. The last two lines are data.tickets.visible_ticket().
POLICY_SQL = """\
CREATE POLICY opsdash_scope ON tickets AS PERMISSIVE FOR SELECT TO PUBLIC
USING (
    tenant_id = (SELECT s.municipality_id FROM opsdash_db_scope(current_user) AS s)
    AND ((SELECT s.whole_municipality FROM opsdash_db_scope(current_user) AS s)
         OR ward_id = (SELECT s.ward_id FROM opsdash_db_scope(current_user) AS s))
    AND coalesce(is_sensitive, false) = false
    AND (category_key IN ({defaults}) OR category_key IN (SELECT key FROM ticket_categories))
)""".format(defaults=", ".join(f"'{key}'" for key in DEFAULT_CATEGORIES))

ENABLE_SQL = (
    "REVOKE ALL ON FUNCTION opsdash_db_scope(name) FROM PUBLIC",
    "ALTER TABLE tickets ENABLE ROW LEVEL SECURITY",
)


def upgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name != "postgresql":
        return
    schema = bind.exec_driver_sql("SELECT pg_catalog.quote_ident(pg_catalog.current_schema())").scalar_one()
    op.execute(MAPPING_TABLE_SQL)
    op.execute(SCOPE_FUNCTION_SQL.format(schema=schema))
    op.execute(POLICY_SQL)
    for statement in ENABLE_SQL:
        op.execute(statement)


def downgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name != "postgresql":
        return
    # Without the policy a mapped role's SELECT grant would read every ticket: take the
    # grants away first (the roles themselves are cluster-wide; a DBA drops them).
    roles = bind.exec_driver_sql("SELECT pg_catalog.quote_ident(role_name) FROM opsdash_db_roles "
                                 "WHERE role_name IN (SELECT rolname FROM pg_catalog.pg_roles)").scalars().all()
    for role in roles:
        op.execute(f"REVOKE ALL ON tickets, ticket_categories FROM {role}")
        op.execute(f"ALTER ROLE {role} NOLOGIN")
    op.execute("DROP POLICY opsdash_scope ON tickets")
    op.execute("ALTER TABLE tickets DISABLE ROW LEVEL SECURITY")
    op.execute("DROP FUNCTION opsdash_db_scope(name)")
    op.execute("DROP TABLE opsdash_db_roles")
