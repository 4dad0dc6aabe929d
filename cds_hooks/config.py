"""Configuration: defaults in ``DefaultConfig``, overridden by the environment.

Flask's ``from_prefixed_env`` reads every ``CDS_*`` variable (values that parse as JSON
become numbers, booleans, lists). ``Settings`` then checks the result once at start-up,
so a deployment with a bad value fails before it answers a single hook.
The README lists every variable; keep the two in step.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from flask import Config

ENVIRONMENTS = ("development", "production")
AUTH_MODES = ("enforce", "sandbox", "off")
LOG_FORMATS = ("json", "text")
CONSOLE_MODES = ("auto", "on", "off")
PUBLIC_SANDBOX_ORIGIN = "https://sandbox.cds-hooks.org"
LOCAL_SANDBOX_ORIGINS = ("http://localhost:8080", "http://127.0.0.1:8080")
"""The CDS Hooks sandbox run from its source (``npm run dev`` serves it on port 8080)."""


class ConfigError(RuntimeError):
    """Raised at start-up for a configuration that must not serve traffic."""


class DefaultConfig:
    ENV = "production"
    DATABASE_URL: str | None = None
    PUBLIC_BASE_URL: str | None = None
    # Proxies whose X-Forwarded-* headers are believed (addresses or networks); none by default.
    TRUSTED_PROXIES: tuple[str, ...] | list[str] | str = ()
    MAX_BODY_BYTES = 2 * 1024 * 1024
    # None: LOCAL_SANDBOX_ORIGINS, plus the public sandbox in sandbox auth mode.
    CORS_ORIGINS: tuple[str, ...] | list[str] | str | None = None
    FHIR_ALLOWLIST: tuple[str, ...] | list[str] | str = ()
    FHIR_CONNECT_TIMEOUT = 1.0
    FHIR_TOTAL_TIMEOUT = 3.0
    FHIR_MAX_PAGES = 5
    FHIR_MAX_RESPONSE_BYTES = 5 * 1024 * 1024
    FHIR_FETCH_WORKERS = 5
    MAX_CARDS = 6
    # Clinicians' free-text override comments may name the patient: erased after this.
    FEEDBACK_COMMENT_RETENTION_DAYS = 90
    # Snooze (docs/trust.md §7): the secret keying the pseudonyms of patient and drug, and
    # earlier secrets still honoured while their snoozes run out. None: no snooze offered.
    PSEUDONYM_KEY: str | None = None
    PSEUDONYM_PREVIOUS_KEYS: tuple[str, ...] | list[str] | str = ()
    # Days an issued card's pseudonym is kept for feedback to find (EHRs send it at once).
    CARD_SUBJECT_RETENTION_DAYS = 7
    POLICY_FILE: str | None = None
    LOG_LEVEL = "INFO"
    LOG_FORMAT = "json"
    # Caller authentication (docs/trust.md). AUTH_MODE unset: "off" in development,
    # "enforce" otherwise. TRUSTED_ISSUERS: JSON list; TRUSTED_ISSUERS_FILE: JSON/TOML.
    AUTH_MODE: str | None = None
    TRUSTED_ISSUERS: str | list[dict[str, Any]] | None = None
    TRUSTED_ISSUERS_FILE: str | None = None
    AUTH_CLOCK_SKEW = 60
    AUTH_MAX_TOKEN_LIFETIME = 3600
    JWKS_TIMEOUT = 2.0
    JWKS_WAIT = 1.0
    JWKS_REFRESH_INTERVAL = 60.0
    JWKS_MAX_AGE = 3600.0
    # The pharmacists' console (docs/console.md). CONSOLE: "off" removes it; "auto" serves
    # it except in enforce mode before a console user exists or OpenID Connect is set up.
    CONSOLE = "auto"
    # Signs the console's session cookie. None: a random key kept in the instance folder
    # (one per machine: set it when several instances serve the console).
    SECRET_KEY: str | None = None
    CONSOLE_LOGIN_LIMIT = "5 per minute;30 per hour"
    CONSOLE_SESSION_HOURS = 8
    CONSOLE_OIDC_METADATA_URL: str | None = None
    CONSOLE_OIDC_CLIENT_ID: str | None = None
    CONSOLE_OIDC_CLIENT_SECRET: str | None = None
    # Who may sign in through the identity provider (preferred_username or email); empty:
    # anyone it authenticates for this client.
    CONSOLE_OIDC_USERS: tuple[str, ...] | list[str] | str = ()


class DevelopmentConfig(DefaultConfig):
    ENV = "development"


class TestingConfig(DefaultConfig):
    ENV = "development"
    TESTING = True


def _as_tuple(value: Any) -> tuple[str, ...]:
    if value is None or value == "":
        return ()
    if isinstance(value, str):
        return tuple(part.strip() for part in value.split(",") if part.strip())
    return tuple(str(v).strip() for v in value if str(v).strip())


def _cors_origins(configured: Any, auth_mode: str) -> tuple[str, ...]:
    """The configured origins, or the default: a local sandbox, and the public sandbox
    only in sandbox mode, the one mode that accepts the tokens it sends; in any other mode
    granting it would only let a public web page read the answers."""
    if configured is not None:
        return _as_tuple(configured)
    public = (PUBLIC_SANDBOX_ORIGIN,) if auth_mode == "sandbox" else ()
    return public + LOCAL_SANDBOX_ORIGINS


def _positive(name: str, value: Any, kind: type) -> Any:
    try:
        number = kind(value)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"CDS_{name} must be a {kind.__name__}, got {value!r}") from exc
    if number <= 0:
        raise ConfigError(f"CDS_{name} must be positive, got {value!r}")
    return number


def _networks(name: str, value: Any) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    try:
        return tuple(ipaddress.ip_network(entry, strict=False) for entry in _as_tuple(value))
    except ValueError as exc:
        raise ConfigError(
            f"CDS_{name} must list IP addresses or networks (10.0.0.0/8), got {value!r}"
        ) from exc


@dataclass(frozen=True, slots=True)
class Settings:
    """The validated, typed view of the Flask config that the service code reads."""

    env: str
    database_url: str
    public_base_url: str | None
    max_body_bytes: int
    cors_origins: tuple[str, ...]
    fhir_allowlist: tuple[str, ...]
    fhir_connect_timeout: float
    fhir_total_timeout: float
    fhir_max_pages: int
    fhir_max_response_bytes: int
    fhir_fetch_workers: int
    max_cards: int
    policy_file: str | None
    log_level: str
    log_format: str = "json"
    auth_mode: str = "enforce"
    auth_clock_skew: int = 60
    auth_max_token_lifetime: int = 3600
    jwks_timeout: float = 2.0
    jwks_wait: float = 1.0
    jwks_refresh_interval: float = 60.0
    jwks_max_age: float = 3600.0
    trusted_proxies: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
    feedback_comment_retention_days: int = 90
    pseudonym_keys: tuple[str, ...] = field(default=(), repr=False)
    """The current pseudonym key first, then earlier ones; empty: snooze is off."""
    card_subject_retention_days: int = 7

    @property
    def snooze(self) -> bool:
        return bool(self.pseudonym_keys)

    console: str = "auto"

    @property
    def development(self) -> bool:
        return self.env == "development"

    @classmethod
    def from_mapping(cls, config: Mapping[str, Any], instance_path: str) -> Settings:
        env = str(config.get("ENV", "production")).lower()
        if env not in ENVIRONMENTS:
            raise ConfigError(f"CDS_ENV must be one of {', '.join(ENVIRONMENTS)}, got {env!r}")
        database_url = config.get("DATABASE_URL") or os.environ.get("DATABASE_URL")
        if not database_url:
            database_url = "sqlite:///" + os.path.join(instance_path, "baclofen-cds.sqlite3")
        public_base_url = config.get("PUBLIC_BASE_URL") or None
        if public_base_url:
            parts = urlsplit(public_base_url)
            if parts.scheme not in ("http", "https") or not parts.netloc:
                raise ConfigError(
                    f"CDS_PUBLIC_BASE_URL must be an absolute URL, got {public_base_url!r}"
                )
            public_base_url = public_base_url.rstrip("/")
        allowlist = _as_tuple(config.get("FHIR_ALLOWLIST"))
        for entry in allowlist:
            parts = urlsplit(entry)
            if parts.scheme not in ("http", "https") or not parts.netloc:
                raise ConfigError(f"CDS_FHIR_ALLOWLIST entries must be base URLs, got {entry!r}")
            if env == "production" and parts.scheme != "https":
                raise ConfigError(f"CDS_FHIR_ALLOWLIST must use https in production, got {entry!r}")
        auth_mode = str(config.get("AUTH_MODE") or ("off" if env == "development" else "enforce"))
        auth_mode = auth_mode.lower()
        if auth_mode not in AUTH_MODES:
            choices = ", ".join(AUTH_MODES)
            raise ConfigError(f"CDS_AUTH_MODE must be one of {choices}, got {auth_mode!r}")
        log_format = str(config.get("LOG_FORMAT") or "json").lower()
        if log_format not in LOG_FORMATS:
            choices = ", ".join(LOG_FORMATS)
            raise ConfigError(f"CDS_LOG_FORMAT must be one of {choices}, got {log_format!r}")
        console = str(config.get("CONSOLE") or "auto").lower()
        if console not in CONSOLE_MODES:
            choices = ", ".join(CONSOLE_MODES)
            raise ConfigError(f"CDS_CONSOLE must be one of {choices}, got {console!r}")
        if auth_mode == "off" and env != "development":
            raise ConfigError("CDS_AUTH_MODE=off is only allowed with CDS_ENV=development")
        return cls(
            pseudonym_keys=_pseudonym_keys(config),
            card_subject_retention_days=_positive(
                "CARD_SUBJECT_RETENTION_DAYS", config.get("CARD_SUBJECT_RETENTION_DAYS", 7), int
            ),
            env=env,
            database_url=str(database_url),
            public_base_url=public_base_url,
            max_body_bytes=_positive("MAX_BODY_BYTES", config.get("MAX_BODY_BYTES"), int),
            cors_origins=_cors_origins(config.get("CORS_ORIGINS"), auth_mode),
            fhir_allowlist=tuple(e.rstrip("/") for e in allowlist),
            fhir_connect_timeout=_positive(
                "FHIR_CONNECT_TIMEOUT", config.get("FHIR_CONNECT_TIMEOUT"), float
            ),
            fhir_total_timeout=_positive(
                "FHIR_TOTAL_TIMEOUT", config.get("FHIR_TOTAL_TIMEOUT"), float
            ),
            fhir_max_pages=_positive("FHIR_MAX_PAGES", config.get("FHIR_MAX_PAGES"), int),
            fhir_max_response_bytes=_positive(
                "FHIR_MAX_RESPONSE_BYTES", config.get("FHIR_MAX_RESPONSE_BYTES"), int
            ),
            fhir_fetch_workers=_positive(
                "FHIR_FETCH_WORKERS", config.get("FHIR_FETCH_WORKERS"), int
            ),
            max_cards=_positive("MAX_CARDS", config.get("MAX_CARDS"), int),
            policy_file=config.get("POLICY_FILE") or None,
            log_level=str(config.get("LOG_LEVEL", "INFO")).upper(),
            log_format=log_format,
            auth_mode=auth_mode,
            auth_clock_skew=_positive("AUTH_CLOCK_SKEW", config.get("AUTH_CLOCK_SKEW", 60), int),
            auth_max_token_lifetime=_positive(
                "AUTH_MAX_TOKEN_LIFETIME", config.get("AUTH_MAX_TOKEN_LIFETIME", 3600), int
            ),
            jwks_timeout=_positive("JWKS_TIMEOUT", config.get("JWKS_TIMEOUT", 2.0), float),
            jwks_wait=_positive("JWKS_WAIT", config.get("JWKS_WAIT", 1.0), float),
            jwks_refresh_interval=_positive(
                "JWKS_REFRESH_INTERVAL", config.get("JWKS_REFRESH_INTERVAL", 60.0), float
            ),
            jwks_max_age=_positive("JWKS_MAX_AGE", config.get("JWKS_MAX_AGE", 3600.0), float),
            trusted_proxies=_networks("TRUSTED_PROXIES", config.get("TRUSTED_PROXIES")),
            feedback_comment_retention_days=_positive(
                "FEEDBACK_COMMENT_RETENTION_DAYS",
                config.get("FEEDBACK_COMMENT_RETENTION_DAYS", 90),
                int,
            ),
            console=console,
        )


MIN_PSEUDONYM_KEY_LENGTH = 32


def _pseudonym_keys(config: Mapping[str, Any]) -> tuple[str, ...]:
    """The current key, then the previous ones. A key is an HMAC secret: 32 characters at
    least (``python3 -c 'import secrets; print(secrets.token_urlsafe(32))'``), so the
    pseudonyms cannot be recomputed by trying every patient id."""
    current = config.get("PSEUDONYM_KEY")
    previous = _as_tuple(config.get("PSEUDONYM_PREVIOUS_KEYS"))
    if current in (None, ""):
        if previous:
            raise ConfigError("CDS_PSEUDONYM_PREVIOUS_KEYS is set without CDS_PSEUDONYM_KEY")
        return ()
    keys = (str(current), *previous)
    for position, key in enumerate(keys):
        if len(key) < MIN_PSEUDONYM_KEY_LENGTH:
            name = "PSEUDONYM_KEY" if position == 0 else "PSEUDONYM_PREVIOUS_KEYS"
            # The key itself is never quoted: it is a secret.
            raise ConfigError(
                f"CDS_{name} keys must be at least {MIN_PSEUDONYM_KEY_LENGTH} characters long"
            )
    return tuple(dict.fromkeys(keys))


def settings_from_environment() -> Settings:
    """The settings ``create_app`` would use, for commands that do not build the app."""
    from flask import Flask

    config = Config(os.getcwd())
    config.from_object(DefaultConfig)
    config.from_prefixed_env(prefix="CDS")
    instance_path = Flask("cds_hooks.app", instance_relative_config=True).instance_path
    return Settings.from_mapping(config, instance_path)
