"""Signing in to the console: a password user from the database, or the hospital's
identity provider through OpenID Connect (Authlib). Failures say only that the sign-in
failed, and log the reason with the name tried, never the password."""

from __future__ import annotations

import logging
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from authlib.integrations.flask_client import OAuth
from flask import Flask, abort, flash, redirect, render_template, request, session, url_for
from flask_wtf import FlaskForm
from werkzeug.wrappers import Response as BaseResponse
from wtforms import PasswordField, StringField
from wtforms.validators import DataRequired, Length

from cds_hooks.config import ConfigError
from cds_hooks.console import (
    SESSION_CREDENTIAL,
    SESSION_USER,
    bp,
    console_user,
    credential_of,
    state,
)
from cds_hooks.store import get_store
from cds_hooks.store.console import password_hash_of

log = logging.getLogger(__name__)

MAX_USERNAME = 128
MAX_PASSWORD = 1024
MIN_PASSWORD = 12
_HASHER = PasswordHasher()
# Verified against when the name is unknown, so a wrong name costs as long as a wrong
# password and the time taken does not tell which names exist.
_UNKNOWN_USER_HASH = _HASHER.hash("no such console user")


class LoginForm(FlaskForm):
    username = StringField("User name", validators=[DataRequired(), Length(max=MAX_USERNAME)])
    password = PasswordField("Password", validators=[DataRequired(), Length(max=MAX_PASSWORD)])


class LogoutForm(FlaskForm):
    """Signing out is a POST with its CSRF token, so no other site can sign anyone out."""


def hash_password(password: str) -> str:
    """An argon2id hash (argon2-cffi's RFC 9106 low-memory profile)."""
    if len(password) < MIN_PASSWORD:
        raise ValueError(f"a console password needs at least {MIN_PASSWORD} characters")
    if len(password) > MAX_PASSWORD:
        raise ValueError(f"a console password has at most {MAX_PASSWORD} characters")
    return _HASHER.hash(password)


def check_password(stored_hash: str | None, password: str) -> bool:
    try:
        return _HASHER.verify(stored_hash or _UNKNOWN_USER_HASH, password) and bool(stored_hash)
    except (VerificationError, InvalidHashError):
        return False


def init_oidc(app: Flask) -> Any:
    """Authlib's client for the identity provider when CDS_CONSOLE_OIDC_* is set, else None."""
    metadata_url = app.config.get("CONSOLE_OIDC_METADATA_URL")
    client_id = app.config.get("CONSOLE_OIDC_CLIENT_ID")
    if not metadata_url and not client_id:
        return None
    if not metadata_url or not client_id:
        raise ConfigError(
            "OpenID Connect for the console needs both CDS_CONSOLE_OIDC_METADATA_URL "
            "(the provider's .well-known/openid-configuration) and CDS_CONSOLE_OIDC_CLIENT_ID"
        )
    oauth = OAuth(app)
    return oauth.register(
        "hospital",
        client_id=client_id,
        client_secret=app.config.get("CONSOLE_OIDC_CLIENT_SECRET"),
        server_metadata_url=metadata_url,
        client_kwargs={"scope": "openid email profile", "code_challenge_method": "S256"},
    )


def _signed_in(username: str, password_hash: str | None = None) -> BaseResponse:
    # A new session on sign-in: nothing chosen before it (a planted cookie) carries over.
    session.clear()
    session.permanent = True
    session[SESSION_USER] = username
    if password_hash is not None:
        session[SESSION_CREDENTIAL] = credential_of(password_hash)
    log.info("console sign-in", extra={"console_user": username})
    return redirect(url_for("console.overrides"))


@bp.route("/login", methods=["GET", "POST"])
def login() -> Any:
    if request.method == "POST" and not state().may_try_sign_in(request.remote_addr or ""):
        abort(429)
    if console_user() is not None:
        return redirect(url_for("console.overrides"))
    form = LoginForm()
    if form.validate_on_submit():
        username = form.username.data or ""
        stored = password_hash_of(get_store(), username)
        if check_password(stored, form.password.data or ""):
            return _signed_in(username, stored)
        log.warning("console sign-in refused", extra={"console_user": username[:MAX_USERNAME]})
        flash("Wrong user name or password.")
        return render_template("console/login.html", form=form, oidc=state().oidc), 401
    return render_template("console/login.html", form=form, oidc=state().oidc)


@bp.post("/logout")
def logout() -> BaseResponse:
    LogoutForm().validate_on_submit()  # the CSRF token was checked before this view
    session.clear()
    return redirect(url_for("console.login"))


@bp.get("/oidc/login")
def oidc_login() -> Any:
    client = state().oidc
    if client is None:
        return redirect(url_for("console.login"))
    return client.authorize_redirect(url_for("console.oidc_callback", _external=True))


@bp.get("/oidc/callback")
def oidc_callback() -> Any:
    console = state()
    if console.oidc is None:
        return redirect(url_for("console.login"))
    try:
        token = console.oidc.authorize_access_token()
    except Exception as error:  # Authlib raises several types; each means "not signed in"
        log.warning(
            "console OpenID Connect sign-in refused", extra={"error_type": type(error).__name__}
        )
        flash("The identity provider did not sign you in.")
        return redirect(url_for("console.login"))
    claims = token.get("userinfo") or {}
    username = str(
        claims.get("preferred_username") or claims.get("email") or claims.get("sub") or ""
    )
    if not username or (console.oidc_users and username not in console.oidc_users):
        log.warning(
            "console OpenID Connect user not allowed",
            extra={"console_user": username[:MAX_USERNAME]},
        )
        flash("Your account is not allowed to use the console.")
        return redirect(url_for("console.login"))
    return _signed_in(username)
