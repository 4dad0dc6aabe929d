"""What the pharmacists' console reads and writes: its password users, counts of feedback
per day, the override comments a page shows, and the log of who read those comments.

Kept beside ``Store`` rather than in it: the hook path never touches any of this.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import ColumnElement, delete, func, select

from cds_hooks.store import FeedbackFilter, Store, _insert
from cds_hooks.store.schema import card_issue, console_access, console_user, feedback

__all__ = [
    "Comment",
    "DailyCount",
    "comments_page",
    "daily_counts",
    "has_console_users",
    "knowledge_versions",
    "log_comment_view",
    "password_hash_of",
    "remove_console_user",
    "set_console_user",
]


@dataclass(frozen=True, slots=True)
class DailyCount:
    day: date
    """The UTC day of the outcome."""
    service_id: str
    card_topic: str | None
    outcome: str
    count: int
    rules: tuple[str, ...] | None = None
    """The rules the card merged, as recorded when it was issued; None for a card issued
    before that record was kept (schema revision 0003) or by another deployment."""


@dataclass(frozen=True, slots=True)
class Comment:
    outcome_timestamp: datetime
    service_id: str
    card_topic: str | None
    reason_code: str | None
    reason_display: str | None
    text: str


def set_console_user(store: Store, username: str, password_hash: str) -> bool:
    """Add the user, or give an existing one a new password; True when the user is new."""
    now = datetime.now(UTC)
    with store.engine.begin() as connection:
        insert = _insert(connection)(console_user).values(
            username=username, password_hash=password_hash, created_at=now
        )
        created = connection.execute(
            insert.on_conflict_do_nothing(index_elements=[console_user.c.username]).returning(
                console_user.c.username
            )
        ).first()
        if created is None:
            connection.execute(
                console_user.update()
                .where(console_user.c.username == username)
                .values(password_hash=password_hash)
            )
    return created is not None


def remove_console_user(store: Store, username: str) -> bool:
    with store.engine.begin() as connection:
        result = connection.execute(delete(console_user).where(console_user.c.username == username))
    return bool(result.rowcount)


def password_hash_of(store: Store, username: str) -> str | None:
    with store.engine.connect() as connection:
        value = connection.execute(
            select(console_user.c.password_hash).where(console_user.c.username == username)
        ).scalar()
    return None if value is None else str(value)


def has_console_users(store: Store) -> bool:
    with store.engine.connect() as connection:
        return connection.execute(select(console_user.c.username).limit(1)).first() is not None


def log_comment_view(store: Store, username: str, page: int, shown: int) -> None:
    """Who saw which page of comments, and when; never what they said."""
    with store.engine.begin() as connection:
        connection.execute(
            console_access.insert().values(
                username=username, viewed_at=datetime.now(UTC), page=page, comments_shown=shown
            )
        )


def _day(dialect: str) -> ColumnElement[Any]:
    """The outcome's UTC day as YYYY-MM-DD text (SQLite keeps UTC text already)."""
    if dialect == "postgresql":
        utc = func.timezone("UTC", feedback.c.outcome_timestamp)
        return func.to_char(utc, "YYYY-MM-DD")
    return func.date(feedback.c.outcome_timestamp)


def daily_counts(store: Store, where: FeedbackFilter) -> list[DailyCount]:
    """Accepted and overridden counts per UTC day, service, card topic and the rules the
    card merged.

    Counted here rather than grouped by the database: the rules are a JSON list, which
    PostgreSQL's ``json`` cannot group by, and feedback is a few rows per card."""
    day = _day(store.engine.dialect.name).label("day")
    issued = feedback.outerjoin(card_issue, card_issue.c.card_uuid == feedback.c.card_uuid)
    query = where.apply(
        select(
            day,
            feedback.c.service_id,
            feedback.c.card_topic,
            feedback.c.outcome,
            card_issue.c.rules,
        ).select_from(issued)
    )
    counts: Counter[tuple[str, str, str | None, str, tuple[str, ...] | None]] = Counter()
    with store.engine.connect() as connection:
        for row in connection.execute(query):
            rules = tuple(row.rules) if row.rules else None
            counts[(str(row.day), row.service_id, row.card_topic, row.outcome, rules)] += 1
    return [
        DailyCount(
            day=date.fromisoformat(day_text),
            service_id=service_id,
            card_topic=topic,
            outcome=outcome,
            count=count,
            rules=rules,
        )
        for (day_text, service_id, topic, outcome, rules), count in sorted(
            counts.items(), key=lambda item: item[0][0]
        )
    ]


def comments_page(
    store: Store, where: FeedbackFilter, page: int, per_page: int
) -> tuple[Sequence[Comment], int]:
    """One page of override comments, newest first, and how many there are in all.

    Comments past the retention are erased first, so none is shown a day late because the
    hourly erasure has not run yet."""
    store.purge_comments()
    has_comment = where.apply(select(feedback).where(feedback.c.user_comment.is_not(None)))
    listed = has_comment.order_by(feedback.c.outcome_timestamp.desc(), feedback.c.id.desc())
    with store.engine.connect() as connection:
        total = connection.execute(
            select(func.count()).select_from(has_comment.subquery())
        ).scalar_one()
        rows = connection.execute(listed.limit(per_page).offset((page - 1) * per_page))
        comments = [
            Comment(
                outcome_timestamp=row.outcome_timestamp,
                service_id=row.service_id,
                card_topic=row.card_topic,
                reason_code=row.override_reason_code,
                reason_display=row.override_reason_display,
                text=row.user_comment,
            )
            for row in rows
        ]
    return comments, int(total)


def knowledge_versions(store: Store) -> list[str]:
    """The knowledge versions feedback was received under, newest first."""
    with store.engine.connect() as connection:
        rows = connection.execute(
            select(feedback.c.knowledge_version)
            .where(feedback.c.knowledge_version.is_not(None))
            .distinct()
        ).scalars()
        return sorted((str(v) for v in rows), reverse=True)
