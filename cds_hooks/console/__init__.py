"""The pharmacists' console: which advice is overridden and why, the rule table with its
override rates, a case replayed as an EHR shows it, and the override table as CSV.

Server-rendered pages under ``/console`` with their own sign-in (docs/console.md): password
users kept in the database (argon2 hashes, ``baclofen-cds console add-user``), or the
hospital's identity provider through OpenID Connect. The CDS Hooks caller authentication
does not apply here (an EHR's token is no pharmacist's sign-in); everything else does:
CSRF tokens on every form, a signed ``Secure``, ``HttpOnly`` session cookie, login
attempts rate-limited, and ``CDS_CONSOLE=off`` removes the whole console.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import logging
import os
import secrets
import tempfile
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from flask import (
    Blueprint,
    Flask,
    Request,
    Response,
    abort,
    current_app,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from flask.sessions import SecureCookieSession, SecureCookieSessionInterface
from flask_wtf.csrf import CSRFError, CSRFProtect
from limits import RateLimitItem, parse_many
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter
from sqlalchemy.exc import SQLAlchemyError
from werkzeug.wrappers import Response as BaseResponse

from cds_hooks.config import ConfigError, Settings, _as_tuple
from cds_hooks.store import get_store
from cds_hooks.store.console import has_console_users, password_hash_of

bp = Blueprint(
    "console",
    __name__,
    url_prefix="/console",
    template_folder="templates",
    static_folder="static",
)
csrf = CSRFProtect()
EXTENSION = "baclofen_console"
SESSION_USER = "console_user"
SESSION_CREDENTIAL = "console_credential"
OPEN_ENDPOINTS = frozenset(
    {"console.login", "console.oidc_login", "console.oidc_callback", "console.static"}
)
SECRET_KEY_FILE = "console-secret-key"
NO_SECRET_KEY = (
    "The console needs CDS_SECRET_KEY (it signs the console's session cookie), or a "
    "writable instance folder to keep one in."
)
log = logging.getLogger(__name__)
# The console's pages load nothing from elsewhere and run no script.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; img-src 'self'; style-src 'self'; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'"
)
# pygal styles its SVG with an inline <style>; an SVG shown as an image runs no script.
SVG_CONTENT_SECURITY_POLICY = "default-src 'none'; style-src 'unsafe-inline'"


@dataclass(frozen=True, slots=True)
class ConsoleState:
    mode: str
    always_on: bool
    """On whatever the users table holds: CDS_CONSOLE=on, or an auth mode other than
    enforce, or OpenID Connect configured."""
    oidc: Any
    """Authlib's client for the identity provider, or None."""
    oidc_users: frozenset[str]
    login_limits: tuple[RateLimitItem, ...]
    """Sign-in attempts allowed per client address (``CDS_CONSOLE_LOGIN_LIMIT``)."""
    attempts: MovingWindowRateLimiter
    """Counted in this worker's memory only (see docs/console.md)."""

    def may_try_sign_in(self, address: str) -> bool:
        """Count one sign-in attempt from ``address``; False once over any limit. Checked
        in the sign-in view alone: an app-wide rate limiter would add its check to every
        hook call."""
        return all(
            [self.attempts.hit(item, "console-login", address) for item in self.login_limits]
        )


class _ConsoleSessions(SecureCookieSessionInterface):
    """Sessions under the console's cookie path only. A hook call never has one, and
    opening one (a signing serializer per request, once the console sets a secret key)
    cost every hook call; elsewhere Flask gives its null session."""

    def open_session(self, app: Flask, request: Request) -> SecureCookieSession | None:
        if not request.path.startswith(app.config["SESSION_COOKIE_PATH"]):
            return None
        return super().open_session(app, request)


def init_console(app: Flask, settings: Settings) -> None:
    """Register the console unless CDS_CONSOLE=off; fail at start-up on a bad setting."""
    if settings.console == "off":
        return
    from cds_hooks.console import auth, pages  # noqa: F401  (the views register on bp)

    hours = _positive_int(app.config.get("CONSOLE_SESSION_HOURS"), "CONSOLE_SESSION_HOURS")
    secret_key = app.config.get("SECRET_KEY") or _instance_secret_key(app.instance_path)
    if secret_key is None:
        if settings.console == "on":
            raise ConfigError(NO_SECRET_KEY)
        # A container with a read-only root filesystem and no key: the hooks must still
        # start; the console needs a key shared by every worker, so it stays off.
        log.warning(NO_SECRET_KEY + " The console is off.")
        return
    app.config.update(
        SECRET_KEY=secret_key,
        SESSION_COOKIE_NAME="baclofen_console",
        SESSION_COOKIE_PATH="/console",
        SESSION_COOKIE_SECURE=True,
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",  # Strict would drop it on the identity provider's redirect
        PERMANENT_SESSION_LIFETIME=timedelta(hours=hours),
        WTF_CSRF_CHECK_DEFAULT=False,  # checked for the console's forms only (_guard)
        WTF_CSRF_TIME_LIMIT=hours * 3600,
        RATELIMIT_HEADERS_ENABLED=False,
    )
    app.session_interface = _ConsoleSessions()
    csrf.init_app(app)
    oidc = auth.init_oidc(app)
    app.register_blueprint(bp)
    login_limit = str(app.config.get("CONSOLE_LOGIN_LIMIT") or "5 per minute")
    try:
        login_limits = tuple(parse_many(login_limit))
    except ValueError as exc:
        raise ConfigError(
            "CDS_CONSOLE_LOGIN_LIMIT is not a rate such as '5 per minute;30 per hour'"
        ) from exc
    app.extensions[EXTENSION] = ConsoleState(
        mode=settings.console,
        always_on=settings.console == "on" or settings.auth_mode != "enforce" or oidc is not None,
        oidc=oidc,
        oidc_users=frozenset(_as_tuple(app.config.get("CONSOLE_OIDC_USERS"))),
        login_limits=login_limits,
        attempts=MovingWindowRateLimiter(MemoryStorage()),
    )


def _positive_int(value: Any, name: str) -> int:
    try:
        number = int(value)
    except (TypeError, ValueError):
        number = 0
    if number <= 0:
        raise ConfigError(f"CDS_{name} must be a positive whole number, got {value!r}")
    return number


def _instance_secret_key(instance_path: str) -> str | None:
    """A random key made once and kept (owner-only) in the instance folder: sessions then
    survive a restart and are shared by the gunicorn workers of this machine. None when
    the folder cannot be written. Written whole to a private file first and then linked
    into place, so a process starting at the same moment never reads half a key."""
    path = os.path.join(instance_path, SECRET_KEY_FILE)
    try:
        with open(path, encoding="ascii") as existing:
            return existing.read().strip()
    except FileNotFoundError:
        pass
    except OSError:
        return None
    try:
        descriptor, draft = tempfile.mkstemp(dir=instance_path, prefix=".console-key-")
    except OSError:
        return None
    try:
        with os.fdopen(descriptor, "w", encoding="ascii") as created:
            created.write(secrets.token_urlsafe(48))
        with contextlib.suppress(FileExistsError):  # another process linked its key first
            os.link(draft, path)
    finally:
        os.unlink(draft)
    with open(path, encoding="ascii") as kept:
        return kept.read().strip()


def state() -> ConsoleState:
    console: ConsoleState = current_app.extensions[EXTENSION]
    return console


def console_user() -> str | None:
    user = session.get(SESSION_USER)
    return user if isinstance(user, str) else None


def credential_of(password_hash: str | None) -> str:
    """What a password user's session remembers of the password: a digest of its hash,
    so removing the user or changing the password ends every session signed in with it."""
    return hashlib.sha256((password_hash or "").encode()).hexdigest()[:32]


def _still_valid(user: str) -> bool:
    remembered = session.get(SESSION_CREDENTIAL)
    if remembered is None:
        return True  # signed in through the identity provider, which decides
    stored = password_hash_of(get_store(), user)
    return stored is not None and hmac.compare_digest(str(remembered), credential_of(stored))


@bp.before_request
def _guard() -> BaseResponse | None:
    """Hidden (404) while switched off by default; CSRF on every form; sign-in first."""
    console = state()
    if not console.always_on and not has_console_users(get_store()):
        abort(404)
    if request.method == "POST":
        csrf.protect()
    if request.endpoint in OPEN_ENDPOINTS:
        return None
    user = console_user()
    if user is None or not _still_valid(user):
        session.clear()
        return redirect(url_for("console.login"))
    return None


@bp.errorhandler(CSRFError)
def _form_refused(error: CSRFError) -> tuple[str, int]:
    log.warning("console form refused", extra={"reason": error.description})
    return _error_page(
        "Form refused", "The form had expired or did not come from this console. Try again."
    ), 400


@bp.errorhandler(SQLAlchemyError)
def _database_down(error: SQLAlchemyError) -> tuple[str, int]:
    # Only the type: SQLAlchemy's messages quote the statement's parameters (comments).
    log.warning("console: database unavailable", extra={"error_type": type(error).__name__})
    return _error_page("Database unavailable", "The database did not answer. Try again soon."), 503


@bp.errorhandler(429)
def _too_many(error: Exception) -> tuple[str, int]:
    del error
    return _error_page("Too many attempts", "Too many sign-in attempts; wait a minute."), 429


def _error_page(title: str, message: str) -> str:
    back = url_for("console.overrides") if console_user() else url_for("console.login")
    return render_template("console/error.html", title=title, message=message, back=back, user=None)


@bp.after_request
def _headers(response: Response) -> Response:
    svg = response.mimetype == "image/svg+xml"
    response.headers["Content-Security-Policy"] = (
        SVG_CONTENT_SECURITY_POLICY if svg else CONTENT_SECURITY_POLICY
    )
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "same-origin"
    if request.endpoint != "console.static":
        response.headers["Cache-Control"] = "no-store"
    return response
