"""Feedback rows name the topic of the card they are about (read from the card's uuid).

Rows stored before this revision keep a NULL topic: their cards' uuids carried none.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("feedback") as batch:
        batch.add_column(sa.Column("card_topic", sa.String(64)))


def downgrade() -> None:
    with op.batch_alter_table("feedback") as batch:
        batch.drop_column("card_topic")
