"""Which CDS clients we trust: the issuer registry an EHR administrator configures.

An issuer is trusted by its exact ``iss`` string, together with where its keys come from:
keys pinned inline (nothing is ever fetched for that issuer), or a JWKS URL, and the
``jku`` header values it may send (CDS Hooks: keep an allowlist of ``iss`` and ``jku``).
The registry is read once at start-up; anything malformed raises ``ConfigError`` so a
deployment never serves with a half-understood trust configuration.
"""

from __future__ import annotations

import json
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from joserfc.jwk import KeySet

from cds_hooks.config import ConfigError
from cds_hooks.network import is_loopback_host

SANDBOX_ISSUER = "https://sandbox.cds-hooks.org"
SANDBOX_JKU = "https://sandbox.cds-hooks.org/.well-known/jwks.json"
LEGACY_SANDBOX_ISSUERS = (
    "http://legacy-sandbox.cds-hooks.org",
    "https://legacy-sandbox.cds-hooks.org",
)
SIGNING_KEY_TYPES = ("EC", "RSA")
_FIELDS = frozenset({"iss", "jwks_url", "jwks", "jku", "tenants"})


@dataclass(frozen=True, slots=True)
class Issuer:
    """One trusted CDS client. ``keys`` set: pinned, never fetched."""

    iss: str
    jwks_url: str | None = None
    keys: KeySet | None = None
    jku: tuple[str, ...] = ()
    tenants: tuple[str, ...] = ()

    @property
    def pinned(self) -> bool:
        return self.keys is not None


def signing_keys(document: Any) -> KeySet:
    """The EC and RSA signature keys of a JWK Set document, each with a ``kid``.

    Symmetric (``oct``) and encryption keys are dropped, so an HMAC "key confusion"
    token can never find a key to verify against; unparseable keys are skipped.
    """
    if not isinstance(document, Mapping) or not isinstance(document.get("keys"), list):
        raise ValueError("a JWK Set is an object with a 'keys' array")
    usable = [
        key
        for key in document["keys"]
        if isinstance(key, Mapping)
        and key.get("kty") in SIGNING_KEY_TYPES
        and isinstance(key.get("kid"), str)
        and key.get("use", "sig") == "sig"
        and "d" not in key
    ]
    kept = []
    for key in usable:
        try:
            kept.append(KeySet.import_key_set({"keys": [dict(key)]}).keys[0])
        except Exception:  # joserfc raises several types for bad key material
            continue
    return KeySet(kept)


def _https_url(value: Any, what: str) -> str:
    if not isinstance(value, str):
        raise ConfigError(f"{what} must be a URL string")
    parts = urlsplit(value)
    if not parts.hostname or parts.username or parts.password:
        raise ConfigError(f"{what} must be an absolute URL without credentials, got {value!r}")
    if parts.scheme != "https" and not (
        parts.scheme == "http" and is_loopback_host(parts.hostname)
    ):
        raise ConfigError(f"{what} must use https, got {value!r}")
    return value


def _strings(value: Any, what: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise ConfigError(f"{what} must be a list of non-empty strings")
    return tuple(value)


def parse_issuer(entry: Any, position: int) -> Issuer:
    where = f"trusted issuer #{position + 1}"
    if not isinstance(entry, Mapping):
        raise ConfigError(f"{where} must be an object")
    unknown = set(entry) - _FIELDS
    if unknown:
        raise ConfigError(f"{where} has unknown fields: {', '.join(sorted(unknown))}")
    iss = entry.get("iss")
    if not isinstance(iss, str) or not iss:
        raise ConfigError(f"{where} needs an 'iss' string")
    where = f"trusted issuer {iss!r}"
    jwks_url = entry.get("jwks_url")
    if jwks_url is not None:
        jwks_url = _https_url(jwks_url, f"{where}: jwks_url")
    keys = None
    if entry.get("jwks") is not None:
        if jwks_url is not None:
            raise ConfigError(f"{where}: give either 'jwks' (pinned keys) or 'jwks_url', not both")
        try:
            keys = signing_keys(entry["jwks"])
        except ValueError as exc:
            raise ConfigError(f"{where}: jwks: {exc}") from None
        if not keys.keys:
            raise ConfigError(f"{where}: jwks holds no EC or RSA signature key with a kid")
    jku = tuple(
        _https_url(url, f"{where}: jku") for url in _strings(entry.get("jku"), f"{where}: jku")
    )
    if keys is None and jwks_url is None and not jku:
        raise ConfigError(f"{where} needs its keys: 'jwks', 'jwks_url' or an allowed 'jku'")
    return Issuer(
        iss=iss,
        jwks_url=jwks_url,
        keys=keys,
        jku=jku,
        tenants=_strings(entry.get("tenants"), f"{where}: tenants"),
    )


def parse_issuers(value: Any) -> tuple[Issuer, ...]:
    """Parse ``CDS_TRUSTED_ISSUERS``: a JSON list (or its text), or ``{"issuers": [...]}``."""
    if isinstance(value, str | bytes):
        try:
            value = json.loads(value)
        except ValueError:
            raise ConfigError("CDS_TRUSTED_ISSUERS is not valid JSON") from None
    if isinstance(value, Mapping) and "issuers" in value:
        value = value["issuers"]
    if not isinstance(value, Sequence) or isinstance(value, str):
        raise ConfigError("trusted issuers must be a list of objects")
    issuers = tuple(parse_issuer(entry, i) for i, entry in enumerate(value))
    seen: set[str] = set()
    for issuer in issuers:
        if issuer.iss in seen:
            raise ConfigError(f"trusted issuer {issuer.iss!r} is listed twice")
        seen.add(issuer.iss)
    return issuers


def read_issuers_file(path: str) -> tuple[Issuer, ...]:
    """``CDS_TRUSTED_ISSUERS_FILE``: JSON, or TOML with ``[[issuers]]`` tables."""
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read CDS_TRUSTED_ISSUERS_FILE {path}: {exc.strerror}") from None
    if file.suffix.lower() == ".toml":
        try:
            return parse_issuers(tomllib.loads(text))
        except tomllib.TOMLDecodeError:
            raise ConfigError(f"CDS_TRUSTED_ISSUERS_FILE {path} is not valid TOML") from None
    return parse_issuers(text)


def configured_issuers(config: Mapping[str, Any]) -> tuple[Issuer, ...]:
    """Issuers from ``TRUSTED_ISSUERS`` and ``TRUSTED_ISSUERS_FILE`` (both may be set)."""
    issuers: tuple[Issuer, ...] = ()
    if config.get("TRUSTED_ISSUERS"):
        issuers += parse_issuers(config["TRUSTED_ISSUERS"])
    if config.get("TRUSTED_ISSUERS_FILE"):
        issuers += read_issuers_file(str(config["TRUSTED_ISSUERS_FILE"]))
    names = [issuer.iss for issuer in issuers]
    if len(names) != len(set(names)):
        raise ConfigError("an issuer appears in both CDS_TRUSTED_ISSUERS and its file")
    return issuers


def _packaged_keys(name: str) -> KeySet:
    text = resources.files("cds_hooks.auth").joinpath("keys", name).read_text(encoding="utf-8")
    return signing_keys(json.loads(text))


def sandbox_issuers() -> tuple[Issuer, ...]:
    """The public CDS Hooks sandboxes, with their keys pinned from the package."""
    legacy = _packaged_keys("legacy-sandbox.cds-hooks.org-jwks.json")
    return (
        Issuer(
            iss=SANDBOX_ISSUER,
            keys=_packaged_keys("sandbox.cds-hooks.org-jwks.json"),
            jku=(SANDBOX_JKU,),
        ),
        *(Issuer(iss=iss, keys=legacy) for iss in LEGACY_SANDBOX_ISSUERS),
    )
