"""The pharmacists' console: its password users, the log of who read override comments,
and the knowledge version on each feedback row so rates can be compared across versions.

Expand only: new tables and a nullable column, which the release before serves on.

Revision ID: 0004
Revises: 0002
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("feedback") as batch:
        batch.add_column(sa.Column("knowledge_version", sa.String(32)))
    op.create_table(
        "console_user",
        sa.Column("username", sa.String(128), nullable=False),
        sa.Column("password_hash", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("username", name="pk_console_user"),
    )
    op.create_table(
        "console_access",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("username", sa.String(320), nullable=False),
        sa.Column("viewed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("page", sa.Integer(), nullable=False),
        sa.Column("comments_shown", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_console_access"),
    )
    op.create_index("ix_console_access_viewed_at", "console_access", ["viewed_at"])


def downgrade() -> None:
    op.drop_index("ix_console_access_viewed_at", table_name="console_access")
    op.drop_table("console_access")
    op.drop_table("console_user")
    with op.batch_alter_table("feedback") as batch:
        batch.drop_column("knowledge_version")
