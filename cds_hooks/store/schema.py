"""Tables of the store (SQLAlchemy Core). Alembic migrations are the source of truth for
the deployed schema; these definitions mirror the head revision for queries.

No request content is kept: feedback rows hold card and suggestion uuids, the outcome,
the reason coding and the clinician's optional comment. That comment is free text and may
name the patient, so it is erased after CDS_FEEDBACK_COMMENT_RETENTION_DAYS (docs/trust.md).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, Column, DateTime, Float, Integer, MetaData, String, Table, Text
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator

# Deterministic constraint names, so later migrations can refer to them on every backend.
metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_name)s",
        "uq": "uq_%(table_name)s_%(column_0_name)s",
        "pk": "pk_%(table_name)s",
    }
)


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite stores them naive)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("store timestamps must be timezone-aware")
        utc = value.astimezone(UTC)
        return utc.replace(tzinfo=None) if dialect.name == "sqlite" else utc

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        moment: datetime = value
        return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


feedback = Table(
    "feedback",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    # sha256 of (card, outcome, outcome timestamp, accepted ids): the same click sent twice
    # (the spec warns clients may resend) is stored once.
    Column("dedup_key", String(64), nullable=False, unique=True),
    Column("service_id", String(128), nullable=False),
    Column("card_uuid", String(36), nullable=False, index=True),
    # The card's topic, read from its uuid (cards/card_uuid.py); NULL for a uuid of
    # another layout, e.g. cards sent before topics were carried in it.
    Column("card_topic", String(64)),
    # The knowledge version of the service that received the feedback (the cards were
    # issued moments before); NULL for rows stored before the console read it.
    Column("knowledge_version", String(32)),
    Column("outcome", String(16), nullable=False),
    Column("accepted_suggestions", JSON, nullable=False),
    Column("override_reason_system", Text),
    Column("override_reason_code", Text),
    Column("override_reason_display", Text),
    Column("user_comment", Text),
    Column("outcome_timestamp", UTCDateTime, nullable=False),
    Column("received_at", UTCDateTime, nullable=False),
)

# JWT ids already used, keyed by sha256(issuer, jti) so any length of either fits the index.
jwt_replay = Table(
    "jwt_replay",
    metadata,
    Column("token_key", String(64), primary_key=True),
    Column("issuer", Text, nullable=False),
    Column("expires_at", UTCDateTime, nullable=False, index=True),
)

# What each card the service issued was about, so feedback (which names a card by its uuid
# alone) can be traced to its rules, and a snooze to the patient and drug it holds. Patient
# and drug are only a keyed pseudonym (HMAC-SHA256 under CDS_PSEUDONYM_KEY): no name,
# identifier or resource is stored. The pseudonyms are erased after
# CDS_CARD_SUBJECT_RETENTION_DAYS; topic, rules and indicator stay for the override rates.
card_issue = Table(
    "card_issue",
    metadata,
    Column("card_uuid", String(36), primary_key=True),
    Column("service_id", String(128), nullable=False),
    Column("hook", String(64), nullable=False),
    Column("topic", String(64), nullable=False),
    Column("indicator", String(16), nullable=False),
    # Every rule the card merges, most severe first (per-rule override rates).
    Column("rules", JSON, nullable=False),
    Column("knowledge_version", String(32), nullable=False),
    Column("issued_at", UTCDateTime, nullable=False, index=True),
    # HMAC of (FHIR server, patient id, drug); NULL without a key or once erased.
    Column("subject_key", String(64), index=True),
    # HMAC of (FHIR server, patient id, drug, user, encounter), set only when the EHR asked
    # for order-select cards to be remembered for its order-sign (PDDI-CDS).
    Column("session_key", String(64), index=True),
    Column("daily_dose", Float),
    Column("dose_unit", String(32)),
    # Drug-class codes of the co-medications (knowledge codes such as "opioid").
    Column("classes", JSON),
)

# Advice a prescriber snoozed: held back for the same pseudonymous patient and drug until
# ``until``, then deleted.
snooze = Table(
    "snooze",
    metadata,
    Column("card_uuid", String(36), primary_key=True),
    Column("subject_key", String(64), nullable=False, index=True),
    Column("topic", String(64), nullable=False),
    Column("indicator", String(16), nullable=False),
    Column("rules", JSON, nullable=False),
    Column("daily_dose", Float),
    Column("dose_unit", String(32)),
    Column("classes", JSON, nullable=False),
    Column("reason_code", String(64), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("until", UTCDateTime, nullable=False, index=True),
)

# People allowed into the pharmacists' console with a password (``baclofen-cds console
# add-user``); an argon2 hash, never the password. Console users signed in through the
# hospital's identity provider are not listed here.
console_user = Table(
    "console_user",
    metadata,
    Column("username", String(128), primary_key=True),
    Column("password_hash", Text, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
)

# Who read clinicians' override comments in the console, and when: the comments may name
# patients. Which page was shown, never what it said.
console_access = Table(
    "console_access",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("username", String(320), nullable=False),
    Column("viewed_at", UTCDateTime, nullable=False, index=True),
    Column("page", Integer, nullable=False),
    Column("comments_shown", Integer, nullable=False),
)
