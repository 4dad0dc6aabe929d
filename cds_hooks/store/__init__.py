"""The database: clinicians' feedback on our cards, what each card issued was about (by
pseudonym) and the snoozes prescribers chose, and the shared JWT replay cache.

SQLite (a file in the Flask instance folder) by default; PostgreSQL when several
instances must share state (``DATABASE_URL=postgresql://...``, driven by psycopg 3).

The schema is owned by Alembic (``migrations/``, configured in code, no alembic.ini).
The service never changes it: ``baclofen-cds db upgrade`` does, as its own step before
serving (a Kubernetes init container, ``make run``), with the rights to change the schema
that the serving processes need not have. Upgrades are serialised by a lock held for the
migration transaction: ``pg_advisory_xact_lock`` on PostgreSQL (DDL is transactional
there, so a waiting upgrade then finds the schema at head), and ``BEGIN IMMEDIATE`` on
SQLite (the database write lock).

Migrations are expand/contract: each one leaves a schema the release before it still
serves (new tables, nullable or defaulted columns; a column goes only in a release after
the one that stopped using it). So a release finding a revision it does not know (a newer
release migrated, then was rolled back) serves on and leaves the schema alone, and
a schema behind this release's head is refused at start-up with the command that fixes it.
A new revision can be written with
``alembic.command.revision(alembic_config(connection), message, autogenerate=True)``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from collections.abc import Callable, Collection, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util.exc import CommandError
from flask import Flask, current_app
from sqlalchemy import (
    Connection,
    Engine,
    Select,
    create_engine,
    delete,
    event,
    func,
    select,
    text,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError

from cds_hooks.config import ConfigError, Settings
from cds_hooks.errors import ServiceUnavailable
from cds_hooks.feedback import FeedbackItem, OverrideReason, parse_uuid
from cds_hooks.store.schema import card_issue, feedback, jwt_replay, snooze

__all__ = [
    "Advice",
    "FeedbackCount",
    "FeedbackFilter",
    "IssuedCard",
    "SchemaState",
    "Store",
    "StoreError",
    "StoreUnavailable",
    "StoredFeedback",
    "alembic_config",
    "create_store_engine",
    "get_store",
    "init_store",
    "normalise_database_url",
    "open_store",
    "schema_state",
    "upgrade_database",
]

log = logging.getLogger(__name__)

MIGRATIONS = Path(__file__).parent / "migrations"
VERSION_TABLE = "baclofen_cds_alembic_version"
# Arbitrary, fixed bigint naming "the baclofen-cds migration" among advisory locks.
MIGRATION_LOCK_KEY = 0x6261636C6F66656E
PG_CONNECT_TIMEOUT_SECONDS = 5
JTI_PRUNE_INTERVAL_SECONDS = 60.0
COMMENT_PURGE_INTERVAL_SECONDS = 3600.0
SUBJECT_PURGE_INTERVAL_SECONDS = 3600.0
_WRITE_LOCK = "baclofen_sqlite_write_lock"
# Alembic's ``context`` is a module global: two migrations in one process must not overlap.
_ALEMBIC_IN_PROCESS = threading.Lock()


class StoreError(RuntimeError):
    """The database could not be reached at start-up, or its schema is behind this release."""


@dataclass(frozen=True, slots=True)
class SchemaState:
    """Where the database's schema stands against this release's migrations."""

    current: tuple[str, ...]
    """Revisions recorded in the database; empty when it was never migrated."""
    head: str
    """This release's newest revision."""
    unknown: tuple[str, ...]
    """Recorded revisions this release does not have: a newer release migrated."""

    @property
    def newer(self) -> bool:
        return bool(self.unknown)

    @property
    def behind(self) -> bool:
        return not self.newer and self.current != (self.head,)

    def describe(self) -> str:
        if self.newer:
            return (
                f"is at revision {', '.join(self.unknown)}, newer than this release "
                f"(head {self.head})"
            )
        if not self.current:
            return f"has no schema yet; this release needs revision {self.head}"
        if self.behind:
            return f"is at revision {', '.join(self.current)}; this release needs {self.head}"
        return f"is at revision {self.head}, this release's head"


def _schema_state(connection: Connection) -> SchemaState:
    context = MigrationContext.configure(connection, opts={"version_table": VERSION_TABLE})
    current = tuple(sorted(context.get_current_heads()))
    script = ScriptDirectory.from_config(alembic_config(connection))
    unknown = []
    for revision in current:
        try:
            script.get_revision(revision)
        except CommandError:
            unknown.append(revision)
    head = script.get_current_head()
    if head is None:
        raise StoreError("the packaged migrations hold no revision")
    return SchemaState(current=current, head=head, unknown=tuple(unknown))


@dataclass(frozen=True, slots=True)
class StoredFeedback:
    service_id: str
    card: str
    outcome: str
    outcome_timestamp: datetime
    received_at: datetime
    accepted_suggestions: tuple[str, ...] = ()
    override_reason: OverrideReason | None = None
    card_topic: str | None = None


@dataclass(frozen=True, slots=True)
class FeedbackCount:
    service_id: str
    card_topic: str | None
    outcome: str
    reason_system: str | None
    reason_code: str | None
    count: int
    reason_display: str | None = None
    """A display the EHR sent with the reason code (one of them, if it sent several)."""


@dataclass(frozen=True, slots=True)
class Advice:
    """What a card advised, as kept to recognise the same advice on a later call."""

    topic: str
    indicator: str
    rules: tuple[str, ...]
    daily_dose: float | None = None
    dose_unit: str | None = None
    classes: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class IssuedCard:
    """The issuance record of one card: its advice and, by pseudonym only, whom it was for."""

    card_uuid: str
    service_id: str
    hook: str
    knowledge_version: str
    issued_at: datetime
    advice: Advice
    subject_key: str | None = None
    """HMAC of the patient and drug; None when no pseudonym key is configured."""
    session_key: str | None = None
    """HMAC of the patient, drug, user and encounter, when kept for order-sign filtering."""


def _advice(row: Any) -> Advice:
    return Advice(
        topic=row["topic"],
        indicator=row["indicator"],
        rules=tuple(row["rules"]),
        daily_dose=row["daily_dose"],
        dose_unit=row["dose_unit"],
        classes=frozenset(row["classes"] or ()),
    )


@dataclass(frozen=True, slots=True)
class FeedbackFilter:
    """Which feedback a summary counts; every field None keeps all of it."""

    since: datetime | None = None
    """Outcomes at or after this moment."""
    until: datetime | None = None
    """Outcomes before this moment."""
    service_id: str | None = None
    knowledge_version: str | None = None

    def apply(self, query: Select[Any]) -> Select[Any]:
        if self.since is not None:
            query = query.where(feedback.c.outcome_timestamp >= self.since)
        if self.until is not None:
            query = query.where(feedback.c.outcome_timestamp < self.until)
        if self.service_id is not None:
            query = query.where(feedback.c.service_id == self.service_id)
        if self.knowledge_version is not None:
            query = query.where(feedback.c.knowledge_version == self.knowledge_version)
        return query


def normalise_database_url(raw: str) -> URL:
    """Parse the URL; bare ``postgresql://`` (or ``postgres://``) selects psycopg 3."""
    try:
        url = make_url(raw)
    except ArgumentError as exc:
        raise ConfigError("DATABASE_URL is not a valid database URL.") from exc
    if url.drivername in ("postgresql", "postgres"):
        url = url.set(drivername="postgresql+psycopg")
    if url.drivername not in ("postgresql+psycopg", "sqlite", "sqlite+pysqlite"):
        raise ConfigError(
            "DATABASE_URL must be a sqlite:///path or postgresql://... URL, "
            f"got driver {url.drivername!r}."
        )
    return url


def create_store_engine(raw_url: str) -> Engine:
    url = normalise_database_url(raw_url)
    if url.get_backend_name() == "postgresql":
        connect_args: dict[str, Any] = {"application_name": "baclofen-cds"}
        if "connect_timeout" not in url.query:
            connect_args["connect_timeout"] = PG_CONNECT_TIMEOUT_SECONDS
        return create_engine(url, pool_pre_ping=True, connect_args=connect_args)
    engine = create_engine(url)
    _take_over_sqlite_transactions(engine)
    return engine


def _take_over_sqlite_transactions(engine: Engine) -> None:
    """Let SQLAlchemy emit BEGIN so DDL is transactional and migrations can lock early.

    The sqlite3 driver's legacy mode autocommits DDL; see SQLAlchemy's "Transactions
    with SQLite and the sqlite3 driver".
    """

    @event.listens_for(engine, "connect")
    def _connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None

    @event.listens_for(engine, "begin")
    def _begin(connection: Connection) -> None:
        write = connection.get_execution_options().get(_WRITE_LOCK, False)
        connection.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")


def alembic_config(connection: Connection) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS).replace("%", "%%"))
    config.set_main_option("path_separator", "os")
    config.set_main_option("version_table", VERSION_TABLE)
    config.attributes["connection"] = connection
    return config


def _insert(connection: Connection) -> Any:
    return postgresql.insert if connection.dialect.name == "postgresql" else sqlite.insert


def _dedup_key(item: FeedbackItem) -> str:
    identity = [
        item.card,
        item.outcome,
        item.outcome_timestamp.isoformat(),
        list(item.accepted_suggestions),
    ]
    return hashlib.sha256(json.dumps(identity).encode()).hexdigest()


def _replay_key(issuer: str, jti: str) -> str:
    return hashlib.sha256(json.dumps([issuer, jti]).encode()).hexdigest()


class StoreUnavailable(ServiceUnavailable):
    """The database failed while serving a request (answered 503, not 500)."""


@contextmanager
def _serving(message: str) -> Iterator[None]:
    """A database failure during a request becomes ``StoreUnavailable(message)``.

    Only the error's type is logged: SQLAlchemy's messages quote the statement's
    parameters, which hold feedback comments and token ids.
    """
    try:
        yield
    except SQLAlchemyError as exc:
        log.warning("database unavailable", extra={"error_type": type(exc).__name__})
        raise StoreUnavailable(message) from None


class Store:
    """Repository over one SQLAlchemy engine; safe to share between threads."""

    def __init__(
        self,
        engine: Engine,
        comment_retention: timedelta | None = None,
        subject_retention: timedelta | None = None,
    ) -> None:
        """``comment_retention``: erase clinicians' override comments this long after they
        arrived (None keeps them). ``subject_retention``: erase the pseudonyms of issued
        cards this long after issue (None keeps them until ``purge_subjects``)."""
        self.engine = engine
        self.comment_retention = comment_retention
        self.subject_retention = subject_retention
        self._next_run: dict[str, float] = {}

    @contextmanager
    def _transaction(self, *, lock: bool = False) -> Iterator[Connection]:
        with self.engine.connect() as connection:
            if lock:
                connection.execution_options(**{_WRITE_LOCK: True})
            with connection.begin():
                yield connection

    def schema(self) -> SchemaState:
        """Where the schema stands; raises ``SQLAlchemyError`` when the database is down."""
        with self.engine.connect() as connection:
            return _schema_state(connection)

    def upgrade(self) -> SchemaState:
        """Bring the schema to this release's head, one upgrade at a time; returns where it
        stood before. A schema a newer release migrated is left as it is (expand/contract:
        it serves this release too), so a rolled-back release's upgrade step succeeds."""
        with _ALEMBIC_IN_PROCESS, self._transaction(lock=True) as connection:
            if connection.dialect.name == "postgresql":
                connection.execute(
                    text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK_KEY}
                )
            before = _schema_state(connection)
            if not before.newer:
                command.upgrade(alembic_config(connection), "head")
        if before.newer:
            log.warning(
                "database schema newer than this release: left as it is",
                extra={"revision": ",".join(before.unknown), "head": before.head},
            )
        else:
            log.info(
                "database schema at head",
                extra={"from_revision": ",".join(before.current) or None, "head": before.head},
            )
        return before

    def ping(self) -> bool:
        """True when the database answers; never raises (it backs /readyz)."""
        try:
            with self.engine.connect() as connection:
                connection.execute(text("SELECT 1"))
        except (SQLAlchemyError, OSError):
            return False
        return True

    def dispose(self) -> None:
        self.engine.dispose()

    def record_feedback(
        self,
        service_id: str,
        items: Sequence[FeedbackItem],
        received_at: datetime | None = None,
        knowledge_version: str | None = None,
    ) -> int:
        """Store a validated batch in one transaction; returns how many rows were new.
        ``knowledge_version``: the receiving service's, which issued the cards moments before.

        Items already stored (same card, outcome, timestamp and accepted suggestions) are
        skipped, so a client resending a batch does not inflate the counts.
        """
        received = received_at or datetime.now(UTC)
        rows: dict[str, dict[str, Any]] = {}
        for item in items:
            key = _dedup_key(item)
            rows[key] = self._feedback_row(service_id, item, key, received, knowledge_version)
        if not rows:
            return 0
        with (
            _serving("The feedback database is unavailable; nothing was stored. Send it again."),
            self._transaction() as connection,
        ):
            # Key order keeps concurrent overlapping batches from deadlocking on the index.
            statement = (
                _insert(connection)(feedback)
                .values([rows[key] for key in sorted(rows)])
                .on_conflict_do_nothing(index_elements=[feedback.c.dedup_key])
                .returning(feedback.c.id)
            )
            stored = len(connection.execute(statement).all())
        if self.comment_retention is not None:
            self._now_and_then(
                "purging old comments", COMMENT_PURGE_INTERVAL_SECONDS, self.purge_comments
            )
        return stored

    @staticmethod
    def _feedback_row(
        service_id: str,
        item: FeedbackItem,
        key: str,
        received: datetime,
        knowledge_version: str | None,
    ) -> dict[str, Any]:
        reason = item.override_reason or OverrideReason()
        return {
            "dedup_key": key,
            "service_id": service_id,
            "card_uuid": item.card,
            "card_topic": item.card_topic,
            "knowledge_version": knowledge_version,
            "outcome": item.outcome,
            "accepted_suggestions": list(item.accepted_suggestions),
            "override_reason_system": reason.system,
            "override_reason_code": reason.code,
            "override_reason_display": reason.display,
            "user_comment": reason.user_comment,
            "outcome_timestamp": item.outcome_timestamp,
            "received_at": received,
        }

    def feedback_for_card(self, card_uuid: str) -> list[StoredFeedback]:
        """Everything clinicians reported about one card, oldest outcome first."""
        card = parse_uuid(card_uuid)
        if card is None:
            return []
        query = (
            select(feedback)
            .where(feedback.c.card_uuid == card)
            .order_by(feedback.c.outcome_timestamp, feedback.c.id)
        )
        with self._transaction() as connection:
            return [self._stored(row) for row in connection.execute(query).mappings()]

    @staticmethod
    def _stored(row: Any) -> StoredFeedback:
        reason = OverrideReason(
            system=row["override_reason_system"],
            code=row["override_reason_code"],
            display=row["override_reason_display"],
            user_comment=row["user_comment"],
        )
        return StoredFeedback(
            service_id=row["service_id"],
            card=row["card_uuid"],
            outcome=row["outcome"],
            outcome_timestamp=row["outcome_timestamp"],
            received_at=row["received_at"],
            accepted_suggestions=tuple(row["accepted_suggestions"]),
            override_reason=None if reason == OverrideReason() else reason,
            card_topic=row["card_topic"],
        )

    def feedback_summary(self, where: FeedbackFilter | None = None) -> list[FeedbackCount]:
        """Counts by service, card topic, outcome and override reason, for pharmacists'
        review: which alerts are dismissed, and why; ``where`` keeps some of the feedback."""
        count = func.count().label("count")
        query = (
            select(
                feedback.c.service_id,
                feedback.c.card_topic,
                feedback.c.outcome,
                feedback.c.override_reason_system,
                feedback.c.override_reason_code,
                count,
                func.max(feedback.c.override_reason_display).label("reason_display"),
            )
            .group_by(
                feedback.c.service_id,
                feedback.c.card_topic,
                feedback.c.outcome,
                feedback.c.override_reason_system,
                feedback.c.override_reason_code,
            )
            .order_by(
                feedback.c.service_id,
                feedback.c.card_topic.asc().nulls_last(),  # the same order on every backend
                feedback.c.outcome,
                count.desc(),
            )
        )
        query = (where or FeedbackFilter()).apply(query)
        with self._transaction() as connection:
            return [
                FeedbackCount(
                    service_id=row["service_id"],
                    card_topic=row["card_topic"],
                    outcome=row["outcome"],
                    reason_system=row["override_reason_system"],
                    reason_code=row["override_reason_code"],
                    count=row["count"],
                    reason_display=row["reason_display"],
                )
                for row in connection.execute(query).mappings()
            ]

    def record_issued(self, cards: Sequence[IssuedCard]) -> None:
        """Store the issuance records of one response's cards, in one statement.

        The rows are parameters of one statement (executemany), not values written into it:
        a statement with the values inlined differs with every number of cards, so
        SQLAlchemy compiled it afresh on every hook call (about 7 M instructions, more than
        the rest of the call)."""
        if not cards:
            return
        rows = [
            {
                "card_uuid": card.card_uuid,
                "service_id": card.service_id,
                "hook": card.hook,
                "topic": card.advice.topic,
                "indicator": card.advice.indicator,
                "rules": list(card.advice.rules),
                "knowledge_version": card.knowledge_version,
                "issued_at": card.issued_at,
                "subject_key": card.subject_key,
                "session_key": card.session_key,
                "daily_dose": card.advice.daily_dose if card.subject_key else None,
                "dose_unit": card.advice.dose_unit if card.subject_key else None,
                "classes": sorted(card.advice.classes) if card.subject_key else None,
            }
            for card in cards
        ]
        with (
            _serving("The database is unavailable; the cards were not recorded."),
            self._transaction() as connection,
        ):
            connection.execute(
                _insert(connection)(card_issue).on_conflict_do_nothing(
                    index_elements=[card_issue.c.card_uuid]
                ),
                rows,
            )
        self._now_and_then(
            "purging snooze data", SUBJECT_PURGE_INTERVAL_SECONDS, self.purge_subjects
        )

    def snoozed(self, subject_keys: Collection[str], now: datetime) -> list[tuple[str, Advice]]:
        """The advice snoozed for any of these pseudonyms and still running at ``now``, each
        with its pseudonym."""
        if not subject_keys:
            return []
        query = select(snooze).where(
            snooze.c.subject_key.in_(sorted(subject_keys)), snooze.c.until > now
        )
        with (
            _serving("The database is unavailable; snoozes could not be read."),
            self._transaction() as connection,
        ):
            return [
                (row["subject_key"], _advice(row)) for row in connection.execute(query).mappings()
            ]

    def shown_at_order_select(
        self, session_keys: Collection[str], since: datetime
    ) -> list[tuple[str, Advice]]:
        """Advice that order-select calls kept for order-sign filtering (PDDI-CDS) showed
        for any of these session pseudonyms since ``since``, each with its pseudonym."""
        if not session_keys:
            return []
        query = select(card_issue).where(
            card_issue.c.session_key.in_(sorted(session_keys)),
            card_issue.c.hook == "order-select",
            card_issue.c.issued_at >= since,
        )
        with (
            _serving("The database is unavailable; earlier cards could not be read."),
            self._transaction() as connection,
        ):
            return [
                (row["session_key"], _advice(row)) for row in connection.execute(query).mappings()
            ]

    def snooze_cards(self, snoozes: Sequence[tuple[str, str, datetime]], now: datetime) -> int:
        """Snooze the advice of issued cards: (card uuid, reason code, until) each. A card
        unknown, issued without a pseudonym or whose pseudonym was erased cannot be
        snoozed and is skipped; returns how many were. Sending the same again only moves
        ``until``."""
        stored = 0
        with (
            _serving("The feedback database is unavailable; send the feedback again."),
            self._transaction() as connection,
        ):
            for card_uuid, reason_code, until in snoozes:
                row = (
                    connection.execute(
                        select(card_issue).where(
                            card_issue.c.card_uuid == card_uuid,
                            card_issue.c.subject_key.is_not(None),
                        )
                    )
                    .mappings()
                    .first()
                )
                if row is None:
                    continue
                insert = _insert(connection)(snooze).values(
                    card_uuid=card_uuid,
                    subject_key=row["subject_key"],
                    topic=row["topic"],
                    indicator=row["indicator"],
                    rules=row["rules"],
                    daily_dose=row["daily_dose"],
                    dose_unit=row["dose_unit"],
                    classes=row["classes"] or [],
                    reason_code=reason_code,
                    created_at=now,
                    until=until,
                )
                connection.execute(
                    insert.on_conflict_do_update(
                        index_elements=[snooze.c.card_uuid],
                        set_={
                            "reason_code": insert.excluded.reason_code,
                            "until": insert.excluded.until,
                        },
                    )
                )
                stored += 1
        return stored

    def purge_subjects(self, now: datetime | None = None, everything: bool = False) -> int:
        """Delete snoozes that ran out and erase the pseudonyms (and the dose and classes
        kept with them) of cards issued longer than ``subject_retention`` ago; with
        ``everything``, every snooze and every pseudonym now. Topic, rules and indicator
        of each card stay, so override rates do not change. Returns the rows changed."""
        moment = now or datetime.now(UTC)
        erase = (
            update(card_issue)
            .where(card_issue.c.subject_key.is_not(None) | card_issue.c.session_key.is_not(None))
            .values(
                subject_key=None, session_key=None, daily_dose=None, dose_unit=None, classes=None
            )
        )
        expired = delete(snooze)
        if not everything:
            expired = expired.where(snooze.c.until <= moment)
            if self.subject_retention is not None:
                erase = erase.where(card_issue.c.issued_at < moment - self.subject_retention)
        keep_subjects = not everything and self.subject_retention is None
        with self._transaction() as connection:
            changed = 0 if keep_subjects else connection.execute(erase).rowcount
            changed += connection.execute(expired).rowcount
        return changed

    def remember_jti(self, issuer: str, jti: str, expires_at: datetime) -> bool:
        """Record a token id; False when (issuer, jti) was seen before and is still live.

        One atomic INSERT ... ON CONFLICT, so two instances sharing PostgreSQL cannot
        both accept the same token. ``expires_at`` must be timezone-aware and should
        include the clock-skew leeway the verifier grants past ``exp``; after it, the
        token is rejected as expired anyway and its id may be forgotten.
        """
        if expires_at.tzinfo is None:
            raise ValueError("expires_at must be timezone-aware")
        now = datetime.now(UTC)
        with (
            _serving("The database is unavailable, so the token could not be checked. Retry."),
            self._transaction() as connection,
        ):
            insert = _insert(connection)(jwt_replay).values(
                token_key=_replay_key(issuer, jti), issuer=issuer, expires_at=expires_at
            )
            statement = insert.on_conflict_do_update(
                index_elements=[jwt_replay.c.token_key],
                set_={"issuer": insert.excluded.issuer, "expires_at": insert.excluded.expires_at},
                where=jwt_replay.c.expires_at <= now,
            ).returning(jwt_replay.c.token_key)
            fresh = connection.execute(statement).first() is not None
        self._now_and_then(
            "pruning expired JWT ids",
            JTI_PRUNE_INTERVAL_SECONDS,
            lambda: self.prune_expired_jti(now),
        )
        return fresh

    def _now_and_then(self, what: str, interval: float, job: Callable[[], int]) -> None:
        """Housekeeping done by the writes themselves, at most once per ``interval``
        seconds per process; a failure is logged and tried again next time."""
        due = time.monotonic()
        if due < self._next_run.get(what, 0.0):
            return
        self._next_run[what] = due + interval
        try:
            job()
        except SQLAlchemyError:
            log.warning(f"{what} failed; will retry later", exc_info=True)

    def purge_comments(self, now: datetime | None = None) -> int:
        """Erase override comments received longer than ``comment_retention`` ago; returns
        how many. Clinicians write them freely and they may name the patient; the rest of
        each row (outcome, reason code) stays, so the counts do not change."""
        if self.comment_retention is None:
            return 0
        cutoff = (now or datetime.now(UTC)) - self.comment_retention
        with self._transaction() as connection:
            result = connection.execute(
                update(feedback)
                .where(feedback.c.user_comment.is_not(None), feedback.c.received_at < cutoff)
                .values(user_comment=None)
            )
            return result.rowcount

    def prune_expired_jti(self, now: datetime | None = None) -> int:
        """Delete replay-cache rows past their expiry; returns how many went."""
        cutoff = now or datetime.now(UTC)
        with self._transaction() as connection:
            result = connection.execute(delete(jwt_replay).where(jwt_replay.c.expires_at <= cutoff))
            return result.rowcount


@contextmanager
def _starting(store: Store, *, dispose: bool) -> Iterator[None]:
    """A database failure before serving becomes a ``StoreError`` naming the database
    (without its password) and the error's type, never SQLAlchemy's message."""
    try:
        yield
    except SQLAlchemyError as exc:
        store.dispose()
        where = store.engine.url.render_as_string(hide_password=True)
        raise StoreError(f"Cannot open the database at {where}: {type(exc).__name__}") from exc
    finally:
        if dispose:
            store.dispose()


def upgrade_database(database_url: str) -> SchemaState:
    """``baclofen-cds db upgrade``: bring the database at ``database_url`` to this release's
    schema (``Store.upgrade``); returns where it stood before."""
    store = Store(create_store_engine(database_url))
    with _starting(store, dispose=True):
        return store.upgrade()


def schema_state(database_url: str) -> SchemaState:
    """``baclofen-cds db current``: where the schema at ``database_url`` stands."""
    store = Store(create_store_engine(database_url))
    with _starting(store, dispose=True):
        return store.schema()


def open_store(
    database_url: str,
    comment_retention: timedelta | None = None,
    subject_retention: timedelta | None = None,
) -> Store:
    """The store at ``database_url`` once its schema is one this release serves: at its
    head, or newer (logged). Raises ``StoreError`` when the database cannot be reached or
    its schema is behind (the message names ``baclofen-cds db upgrade``)."""
    store = Store(create_store_engine(database_url), comment_retention, subject_retention)
    with _starting(store, dispose=False):
        state = store.schema()
    if state.behind:
        store.dispose()
        where = store.engine.url.render_as_string(hide_password=True)
        raise StoreError(
            f"The database at {where} {state.describe()}. "
            "Run `baclofen-cds db upgrade` before starting the service."
        )
    if state.newer:
        log.warning(
            "database schema newer than this release: serving on it",
            extra={"revision": ",".join(state.unknown), "head": state.head},
        )
    return store


def init_store(app: Flask, settings: Settings) -> Store:
    """Open the database named by the settings (``open_store``) and attach it to ``app``."""
    retention = timedelta(days=settings.feedback_comment_retention_days)
    subjects = timedelta(days=settings.card_subject_retention_days)
    store = open_store(settings.database_url, retention, subjects)
    app.extensions["baclofen_store"] = store
    return store


def get_store(app: Flask | None = None) -> Store:
    """The store of ``app`` (default: the current app)."""
    target = app or current_app
    store: Store = target.extensions["baclofen_store"]
    return store
