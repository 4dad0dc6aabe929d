"""A later release's schema, for testing a rollback across a migration.

The later release is this one plus one more migration, written the way the expand/contract
rule asks (docs/operations.md): a new table, a nullable column and a column with a server
default, nothing dropped or renamed. ``upgrade_as_future_release`` runs its upgrade step
as that release's ``baclofen-cds db upgrade`` would: to its head, under the advisory lock
on PostgreSQL (the tests run no other upgrade beside it on SQLite).
"""

from __future__ import annotations

import os
from pathlib import Path

from alembic import command
from sqlalchemy import text

from cds_hooks.store import (
    MIGRATION_LOCK_KEY,
    MIGRATIONS,
    alembic_config,
    create_store_engine,
    upgrade_database,
)

FUTURE_REVISION = "future_expand"

_MIGRATION = '''"""A later release's migration (tests only): expand, never contract.

Revision ID: {revision}
Revises: {down_revision}
"""

import sqlalchemy as sa
from alembic import op

revision = "{revision}"
down_revision = "{down_revision}"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("feedback") as batch:
        batch.add_column(sa.Column("reviewed_at", sa.DateTime(timezone=True)))
        batch.add_column(
            sa.Column("review_state", sa.String(16), nullable=False, server_default="open")
        )
    op.create_table(
        "card_review",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("card_uuid", sa.String(36), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("card_review")
    with op.batch_alter_table("feedback") as batch:
        batch.drop_column("review_state")
        batch.drop_column("reviewed_at")
'''


def upgrade_as_future_release(database_url: str, workdir: Path) -> None:
    """This release's migrations and the later one, applied under the migration lock."""
    head = upgrade_database(database_url).head
    versions = workdir / "future-versions"
    versions.mkdir(exist_ok=True)
    (versions / "future_expand.py").write_text(
        _MIGRATION.format(revision=FUTURE_REVISION, down_revision=head), encoding="utf-8"
    )
    engine = create_store_engine(database_url)
    try:
        with engine.begin() as connection:
            if connection.dialect.name == "postgresql":
                connection.execute(
                    text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK_KEY}
                )
            config = alembic_config(connection)
            config.set_main_option(
                "version_locations", os.pathsep.join([str(MIGRATIONS / "versions"), str(versions)])
            )
            command.upgrade(config, "heads")
    finally:
        engine.dispose()
