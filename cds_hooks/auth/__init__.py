"""Caller authentication for every CDS Hooks call (the trust model is in docs/trust.md).

``init_auth`` installs one app-wide ``before_request`` check. Exempt: CORS preflights
(browsers send them without the Authorization header), the health and metrics
endpoints that load balancers and Prometheus call, and the pharmacists' console, which
has its own sign-in. Everything else, including unknown
paths, needs a valid token before any of our code looks at the request body.

A refusal is a bare 401 with ``WWW-Authenticate: Bearer`` and an OperationOutcome that
says only "authentication failed": the reason goes to our log, never to the caller.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from flask import Flask, Response, current_app, g, request

from cds_hooks import metrics
from cds_hooks.auth.issuers import Issuer, configured_issuers, sandbox_issuers
from cds_hooks.auth.jwks import JwksCache, JwksPolicy
from cds_hooks.auth.replay import ReplayCache
from cds_hooks.auth.verifier import AuthError, Identity, TokenVerifier, VerifierPolicy
from cds_hooks.config import ConfigError, Settings
from cds_hooks.errors import outcome_response

__all__ = [
    "AuthError",
    "Identity",
    "Issuer",
    "TokenVerifier",
    "current_identity",
    "init_auth",
]

log = logging.getLogger(__name__)

EXEMPT_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})
REALM = 'Bearer realm="cds-services"'
SANDBOX_WARNING = (
    "CDS_AUTH_MODE=sandbox: trusting ONLY the public CDS Hooks sandbox keys. Their private "
    "key is published, so ANYONE can mint a token this service accepts. For testing with "
    "the sandbox only; never use with real patient data."
)
PUBLIC_BASE_URL_REQUIRED = (
    "CDS_AUTH_MODE=enforce needs CDS_PUBLIC_BASE_URL: the URL the EHR calls this service "
    "at (for example https://cds.example.org). Callers' tokens must name it as their "
    "audience (aud); without it the audience would follow the Host header, which the "
    "caller chooses."
)
OFF_WARNING = (
    "CDS_AUTH_MODE=off: caller authentication is DISABLED. Anyone who can reach this port "
    "can make the service fetch from an allowlisted FHIR server. Development only."
)


def init_auth(app: Flask, settings: Settings) -> TokenVerifier | None:
    """Build the verifier for ``settings.auth_mode`` and install the request check.

    Trusted issuers are validated here (ConfigError before serving). ``app.config``
    ``AUTH_CLOCK`` (a callable returning epoch seconds) replaces the wall clock; tests
    use it to verify captured, long-expired sandbox tokens.
    """
    if settings.auth_mode == "off":
        log.warning(OFF_WARNING, extra={"auth_mode": "off"})
        app.extensions["baclofen_auth"] = None
        return None
    if settings.auth_mode == "enforce" and settings.public_base_url is None:
        raise ConfigError(PUBLIC_BASE_URL_REQUIRED)
    issuers = _issuers(app, settings)
    configured_clock = app.config.get("AUTH_CLOCK")
    clock: Callable[[], float] = configured_clock if callable(configured_clock) else time.time
    skew = settings.auth_clock_skew
    jwks = JwksCache(
        JwksPolicy(
            timeout=settings.jwks_timeout,
            wait=settings.jwks_wait,
            refresh_interval=settings.jwks_refresh_interval,
            max_age=settings.jwks_max_age,
        )
    )

    def remember_jti(issuer: str, jti: str, expires_at: datetime) -> bool:
        store = app.extensions["baclofen_store"]
        return bool(store.remember_jti(issuer, jti, expires_at + timedelta(seconds=skew)))

    verifier = TokenVerifier(
        issuers,
        jwks,
        ReplayCache(remember_jti),
        VerifierPolicy(clock_skew=skew, max_lifetime=settings.auth_max_token_lifetime),
        clock=clock,
    )
    app.extensions["baclofen_auth"] = verifier
    app.extensions["baclofen_ready_checks"]["trusted_issuers"] = lambda: bool(verifier.issuers)
    app.before_request(_authenticate)
    return verifier


def _issuers(app: Flask, settings: Settings) -> tuple[Issuer, ...]:
    configured = configured_issuers(app.config)
    if settings.auth_mode == "sandbox":
        log.warning(SANDBOX_WARNING, extra={"auth_mode": "sandbox"})
        if configured:
            log.warning(
                "CDS_AUTH_MODE=sandbox ignores CDS_TRUSTED_ISSUERS; use enforce to trust them",
                extra={"auth_mode": "sandbox"},
            )
        return sandbox_issuers()
    if not configured:
        log.error(
            "CDS_AUTH_MODE=enforce with no trusted issuer: every call will be refused and "
            "/readyz reports not ready. Set CDS_TRUSTED_ISSUERS or CDS_TRUSTED_ISSUERS_FILE.",
            extra={"auth_mode": "enforce"},
        )
    return configured


def expected_audience(settings: Settings) -> str:
    """The URL the caller called: the public base URL (required in enforce mode), or in
    sandbox mode this request's (forwarded headers count from trusted proxies only)."""
    base = settings.public_base_url or request.root_url.rstrip("/")
    return base + request.path


def current_identity() -> Identity | None:
    """The verified caller of this request (None when auth is off or exempt)."""
    return g.get("cds_identity")


def _authenticate() -> Response | None:
    if request.method == "OPTIONS" or request.path in EXEMPT_PATHS:
        return None
    if request.blueprint == "console":
        return None  # the pharmacists' console has its own sign-in (cds_hooks.console)
    verifier: TokenVerifier = current_app.extensions["baclofen_auth"]
    settings: Settings = current_app.extensions["baclofen_settings"]
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return _refuse(AuthError("no_bearer_token"), missing=True)
    try:
        identity = verifier.verify(token.strip(), expected_audience(settings))
    except AuthError as error:
        return _refuse(error, missing=False)
    g.cds_identity = identity
    log.info(
        "caller authenticated",
        extra={
            "issuer": identity.issuer,
            "tenant": identity.tenant,
            "jti": identity.jti,
            "kid": identity.kid,
            "token_expires": datetime.fromtimestamp(identity.expires_at, UTC).isoformat(),
        },
    )
    return None


def _refuse(error: AuthError, *, missing: bool) -> Response:
    metrics.count_auth_failure(error.reason)
    log.warning(
        "authentication failed",
        extra={"reason": error.reason, "issuer": error.issuer, "endpoint": request.endpoint},
    )
    response = outcome_response(401, "authentication failed", "login")
    response.headers["WWW-Authenticate"] = REALM if missing else f'{REALM}, error="invalid_token"'
    return response
