"""server-side sign-in sessions (issue 15)

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-30

One row per sign-in (``data.web_sessions``): the SHA-256 of the session id
the browser's signed cookie carries, the user, expiry and revocation. Every
page load, websocket connection and export checks it, so signing out, a
password change, disabling a user and "sign out everywhere" end sessions at
once. A new table: no lock on existing ones.
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "web_sessions",
        sa.Column("key", sa.String(64), primary_key=True),
        sa.Column("username", sa.String(150), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("revoked_reason", sa.String(32), nullable=True),
    )
    op.create_index("ix_web_sessions_username", "web_sessions", ["username"])


def downgrade() -> None:
    op.drop_index("ix_web_sessions_username", table_name="web_sessions")
    op.drop_table("web_sessions")
