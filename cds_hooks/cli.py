"""``baclofen-cds``: serve the service (and the proxy in front of it), upgrade its
database, evaluate a request file offline, print the rules, manage console users."""

from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import sys
from collections.abc import Sequence
from datetime import UTC, date, datetime, time
from pathlib import Path
from typing import Any

from cds_hooks.config import ConfigError


def _serve(args: argparse.Namespace) -> int:
    from cds_hooks import gunicorn_conf

    gunicorn_conf.ensure_metrics_dir()  # before the app imports prometheus_client
    from cds_hooks.app import create_app

    app = create_app()  # fail fast on bad configuration, before forking workers
    max_body_bytes = app.extensions["baclofen_settings"].max_body_bytes
    gunicorn_conf.run(_worker_app, args.host, args.port, args.workers, max_body_bytes)
    return 0


def _proxy(args: argparse.Namespace) -> int:
    from cds_hooks import proxy

    del args
    proxy.run()
    return 0


def _worker_app() -> Any:
    """The app for one gunicorn worker, warmed so the first hook call is not the slow one."""
    from cds_hooks import fhir
    from cds_hooks.app import create_app
    from cds_hooks.knowledge.drugs import triage_medication
    from cds_hooks.model import Concept

    # The master built this app once before forking (``_serve``) and logged what that
    # says: the migration and the auth-mode warnings. Each worker would repeat them; its
    # errors still show.
    logging.disable(logging.WARNING)
    try:
        app = create_app()
    finally:
        logging.disable(logging.NOTSET)
    fhir.warm_up()
    triage_medication(Concept(text="warm-up"))
    # What is built by now (models, validators, knowledge: ~126k objects) lives as long
    # as the worker; frozen, it is no longer re-walked by every full garbage collection.
    gc.freeze()
    return app


def _why(exc: OSError | ValueError | RecursionError) -> str:
    """Why a request file could not be read, never quoting its content (it may hold PHI)."""
    if isinstance(exc, json.JSONDecodeError):
        return f"not valid JSON (line {exc.lineno}, column {exc.colno})"
    if isinstance(exc, OSError):
        return exc.strerror or type(exc).__name__
    if isinstance(exc, RecursionError):
        return "the JSON is nested too deeply"
    return type(exc).__name__


def _load_request(path: Path) -> Any:
    data = json.loads(path.read_text(encoding="utf-8"))
    if isinstance(data, dict) and "body" in data and "path" in data:
        return data["body"]  # a captured HTTP exchange: evaluate its body
    return data


def _evaluate(args: argparse.Namespace) -> int:
    """Runs the pipeline without the app: no store, no caller authentication, no server."""
    from cds_hooks.config import settings_from_environment
    from cds_hooks.discovery import SERVICES
    from cds_hooks.errors import CdsError, operation_outcome
    from cds_hooks.knowledge import load_knowledge
    from cds_hooks.pipeline import evaluate_hook

    try:
        body = _load_request(Path(args.request))
    except (OSError, ValueError, RecursionError) as exc:
        # Neither the path nor the content is echoed: case files are often named after
        # the patient, and stderr ends up in scripts' logs.
        print(f"baclofen-cds: cannot read the request file: {_why(exc)}", file=sys.stderr)
        return 2
    hook = body.get("hook") if isinstance(body, dict) else None
    service = next((s for s in SERVICES if s.hook == hook), None)
    if service is None:
        hooks = ", ".join(s.hook for s in SERVICES)
        print(f"baclofen-cds: the request's hook is none of {hooks}", file=sys.stderr)
        return 2
    settings = settings_from_environment()
    knowledge = load_knowledge(settings.policy_file)
    today = date.fromisoformat(args.today) if args.today else date.today()
    try:
        evaluation = evaluate_hook(service, body, settings, knowledge, today)
    except CdsError as error:
        if args.format == "text":
            print(f"The request was refused: {error.message}")
        else:
            outcome = operation_outcome(error.message, error.issue_code, error.expression)
            print(json.dumps(outcome, indent=2))
        return 1
    if args.format == "text":
        from cds_hooks.reports import evaluation_text

        sys.stdout.write(evaluation_text(evaluation))
    else:
        print(json.dumps(evaluation.response, indent=2))
    return 0


def _rules(args: argparse.Namespace) -> int:
    from cds_hooks.knowledge import load_knowledge
    from cds_hooks.knowledge.table import rule_table_csv, rule_table_markdown

    policy = args.policy if args.policy is not None else os.environ.get("CDS_POLICY_FILE")
    table = rule_table_csv if args.format == "csv" else rule_table_markdown
    sys.stdout.write(table(load_knowledge(policy or None)))
    return 0


def _db_upgrade(args: argparse.Namespace) -> int:
    """The migration step: before the service starts, never by the service itself."""
    from cds_hooks.config import settings_from_environment
    from cds_hooks.logging import configure_logging
    from cds_hooks.store import upgrade_database

    del args
    settings = settings_from_environment()
    configure_logging(settings.log_level, log_format=settings.log_format)
    _make_sqlite_folder(settings.database_url)
    upgrade_database(settings.database_url)
    return 0


def _make_sqlite_folder(database_url: str) -> None:
    """The default SQLite file lives in the instance folder, which may not exist yet."""
    from cds_hooks.store import normalise_database_url

    url = normalise_database_url(database_url)
    if url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:"):
        os.makedirs(os.path.dirname(os.path.abspath(url.database)), exist_ok=True)


def _db_current(args: argparse.Namespace) -> int:
    """Where the schema stands; exit status 1 when it is behind this release."""
    from cds_hooks.config import settings_from_environment
    from cds_hooks.store import schema_state

    del args
    state = schema_state(settings_from_environment().database_url)
    print(f"The database {state.describe()}.")
    return 1 if state.behind else 0


def _feedback(args: argparse.Namespace) -> int:
    """Override and acceptance counts for pharmacists reviewing how cards are received."""
    from cds_hooks.config import settings_from_environment
    from cds_hooks.reports import feedback_csv, feedback_text
    from cds_hooks.store import FeedbackFilter, open_store

    store = open_store(settings_from_environment().database_url)
    try:
        counts = store.feedback_summary(FeedbackFilter(since=args.since, service_id=args.service))
    finally:
        store.dispose()
    if args.format == "csv":
        sys.stdout.write(feedback_csv(counts))
    elif counts:
        sys.stdout.write(feedback_text(counts))
    if not counts:
        filters = (f" since {args.since.isoformat()}" if args.since else "") + (
            f" for {args.service}" if args.service else ""
        )
        # Under csv, stdout keeps just the header (a valid empty table) for scripts.
        print(f"no feedback yet{filters}", file=sys.stderr if args.format == "csv" else sys.stdout)
    return 0


def _snooze_purge(args: argparse.Namespace) -> int:
    """Forget what snoozes need: the running service does the same by itself, at most
    hourly per worker; ``--all`` forgets everything at once."""
    from datetime import timedelta

    from cds_hooks.config import settings_from_environment
    from cds_hooks.store import open_store

    settings = settings_from_environment()
    retention = timedelta(days=settings.card_subject_retention_days)
    store = open_store(settings.database_url, subject_retention=retention)
    try:
        changed = store.purge_subjects(everything=args.all)
    finally:
        store.dispose()
    what = "every snooze and pseudonym" if args.all else "expired snoozes and old pseudonyms"
    print(f"purged {what}: {changed} row(s)")
    return 0


def _console_user(args: argparse.Namespace) -> int:
    """Add a console user or set a user's password; remove one. The password is read from
    the terminal (asked twice) or, with --password-stdin, from the first line of stdin."""
    from cds_hooks.config import settings_from_environment
    from cds_hooks.console.auth import hash_password
    from cds_hooks.store import open_store
    from cds_hooks.store.console import remove_console_user, set_console_user

    store = open_store(settings_from_environment().database_url)
    try:
        if args.console_command == "remove-user":
            if not remove_console_user(store, args.username):
                print(f"baclofen-cds: no console user {args.username!r}", file=sys.stderr)
                return 1
            print(f"console user {args.username!r} removed")
            return 0
        password = _new_password(args.password_stdin)
        if password is None:
            return 2
        try:
            hashed = hash_password(password)
        except ValueError as error:
            print(f"baclofen-cds: {error}", file=sys.stderr)
            return 2
        created = set_console_user(store, args.username, hashed)
    finally:
        store.dispose()
    print(f"console user {args.username!r} {'added' if created else 'given a new password'}")
    return 0


def _new_password(from_stdin: bool) -> str | None:
    import getpass

    if from_stdin:
        return sys.stdin.readline().rstrip("\n")
    password = getpass.getpass("Password: ")
    if getpass.getpass("Password again: ") != password:
        print("baclofen-cds: the passwords differ", file=sys.stderr)
        return None
    return password


def _moment(value: str) -> datetime:
    """``--since``: a date (midnight UTC) or an RFC 3339 date-time with its offset."""
    from cds_hooks.feedback import parse_rfc3339

    moment = parse_rfc3339(value)
    if moment is not None:
        return moment
    try:
        return datetime.combine(date.fromisoformat(value), time(), UTC)
    except ValueError:
        raise argparse.ArgumentTypeError(
            "expected a date (2026-11-01) or a date-time with offset (2026-11-01T08:00:00Z)"
        ) from None


def build_parser() -> argparse.ArgumentParser:
    from cds_hooks.discovery import SERVICES

    parser = argparse.ArgumentParser(prog="baclofen-cds", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the service under gunicorn")
    serve.add_argument("--host", help="address to bind (default 127.0.0.1, or CDS_HOST)")
    serve.add_argument("--port", type=int, help="port to bind (default 8080, or CDS_PORT)")
    serve.add_argument(
        "--workers", type=int, help="worker processes (default WEB_CONCURRENCY or 2)"
    )
    serve.set_defaults(handler=_serve)

    proxy = commands.add_parser(
        "proxy",
        help="run nginx in front of `serve` (the production topology): it listens on "
        "CDS_PROXY_HOST:CDS_PROXY_PORT (default 0.0.0.0:8080) and forwards whole requests "
        "to gunicorn on 127.0.0.1:CDS_PORT",
    )
    proxy.set_defaults(handler=_proxy)

    db = commands.add_parser("db", help="the database schema (docs/operations.md)")
    db_commands = db.add_subparsers(dest="db_command", required=True)
    upgrade = db_commands.add_parser(
        "upgrade",
        help="migrate the schema to this release, before serving (one upgrade at a time); "
        "a schema a newer release migrated is left as it is",
    )
    upgrade.set_defaults(handler=_db_upgrade)
    current = db_commands.add_parser(
        "current", help="print where the schema stands; exit status 1 when it is behind"
    )
    current.set_defaults(handler=_db_current)

    evaluate = commands.add_parser(
        "evaluate", help="print the CDS Hooks response for a request file"
    )
    evaluate.add_argument(
        "request", help="a hook request (JSON), or a captured exchange with 'body'"
    )
    evaluate.add_argument("--today", help="evaluate as of this date (YYYY-MM-DD)")
    evaluate.add_argument(
        "--format",
        choices=("json", "text"),
        default="json",
        help="json: the CDS Hooks response (default); text: each card's indicator, summary, "
        "data used and suggestions, for reading",
    )
    evaluate.set_defaults(handler=_evaluate)

    rules = commands.add_parser("rules", help="print the effective rule table")
    rules.add_argument("--policy", help="institution policy file (default CDS_POLICY_FILE)")
    rules.add_argument(
        "--format",
        choices=("markdown", "csv"),
        default="markdown",
        help="markdown: the table, threshold notes and sources (default); csv: one row per rule",
    )
    rules.set_defaults(handler=_rules)

    feedback = commands.add_parser(
        "feedback", help="print feedback counts by service, outcome and override reason"
    )
    feedback.add_argument(
        "--since",
        type=_moment,
        help="only feedback whose outcome came at or after this date (UTC) or date-time",
    )
    feedback.add_argument(
        "--service", choices=[s.id for s in SERVICES], help="only this service's feedback"
    )
    feedback.add_argument(
        "--format",
        choices=("text", "csv"),
        default="text",
        help="text: a table with topics and reasons by name (default); csv: codes and names",
    )
    feedback.set_defaults(handler=_feedback)

    snooze = commands.add_parser("snooze", help="the snoozes prescribers chose (docs/trust.md)")
    snooze_commands = snooze.add_subparsers(dest="snooze_command", required=True)
    purge = snooze_commands.add_parser(
        "purge",
        help="delete expired snoozes and erase card pseudonyms older than "
        "CDS_CARD_SUBJECT_RETENTION_DAYS",
    )
    purge.add_argument(
        "--all",
        action="store_true",
        help="delete every snooze and erase every pseudonym now (after a key leak, or to "
        "forget every patient); override counts stay",
    )
    purge.set_defaults(handler=_snooze_purge)
    console = commands.add_parser(
        "console", help="users of the pharmacists' console (docs/console.md)"
    )
    console_commands = console.add_subparsers(dest="console_command", required=True)
    add_user = console_commands.add_parser(
        "add-user",
        help="add a console user, or give an existing one a new password (argon2-hashed; "
        "at least 12 characters)",
    )
    add_user.add_argument("username")
    add_user.add_argument(
        "--password-stdin",
        action="store_true",
        help="read the password from the first line of standard input instead of asking",
    )
    add_user.set_defaults(handler=_console_user)
    remove_user = console_commands.add_parser("remove-user", help="remove a console user")
    remove_user.add_argument("username")
    remove_user.set_defaults(handler=_console_user)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.handler(args))
    except ConfigError as error:
        print(f"baclofen-cds: configuration error: {error}", file=sys.stderr)
        return 2
    except Exception as error:
        # Imported only now: the store is slow to import and most commands never touch it.
        from cds_hooks.store import StoreError

        if not isinstance(error, StoreError):
            raise
        print(f"baclofen-cds: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
