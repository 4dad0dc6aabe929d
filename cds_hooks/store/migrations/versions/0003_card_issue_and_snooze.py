"""What each issued card was about (pseudonymous), and the snoozes prescribers chose.

Expand only: two new tables, so the release before this one serves on this schema.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "card_issue",
        sa.Column("card_uuid", sa.String(36), nullable=False),
        sa.Column("service_id", sa.String(128), nullable=False),
        sa.Column("hook", sa.String(64), nullable=False),
        sa.Column("topic", sa.String(64), nullable=False),
        sa.Column("indicator", sa.String(16), nullable=False),
        sa.Column("rules", sa.JSON(), nullable=False),
        sa.Column("knowledge_version", sa.String(32), nullable=False),
        sa.Column("issued_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("subject_key", sa.String(64)),
        sa.Column("session_key", sa.String(64)),
        sa.Column("daily_dose", sa.Float()),
        sa.Column("dose_unit", sa.String(32)),
        sa.Column("classes", sa.JSON()),
        sa.PrimaryKeyConstraint("card_uuid", name="pk_card_issue"),
    )
    op.create_index("ix_card_issue_issued_at", "card_issue", ["issued_at"])
    op.create_index("ix_card_issue_subject_key", "card_issue", ["subject_key"])
    op.create_index("ix_card_issue_session_key", "card_issue", ["session_key"])
    op.create_table(
        "snooze",
        sa.Column("card_uuid", sa.String(36), nullable=False),
        sa.Column("subject_key", sa.String(64), nullable=False),
        sa.Column("topic", sa.String(64), nullable=False),
        sa.Column("indicator", sa.String(16), nullable=False),
        sa.Column("rules", sa.JSON(), nullable=False),
        sa.Column("daily_dose", sa.Float()),
        sa.Column("dose_unit", sa.String(32)),
        sa.Column("classes", sa.JSON(), nullable=False),
        sa.Column("reason_code", sa.String(64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("until", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("card_uuid", name="pk_snooze"),
    )
    op.create_index("ix_snooze_subject_key", "snooze", ["subject_key"])
    op.create_index("ix_snooze_until", "snooze", ["until"])


def downgrade() -> None:
    op.drop_index("ix_snooze_until", table_name="snooze")
    op.drop_index("ix_snooze_subject_key", table_name="snooze")
    op.drop_table("snooze")
    op.drop_index("ix_card_issue_session_key", table_name="card_issue")
    op.drop_index("ix_card_issue_subject_key", table_name="card_issue")
    op.drop_index("ix_card_issue_issued_at", table_name="card_issue")
    op.drop_table("card_issue")
