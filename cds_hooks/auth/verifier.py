"""Verifying the JWT a CDS client sends (CDS Hooks 2.0 "Trusting CDS Clients").

Order matters: nothing from the token is believed before its signature verifies, except
``iss`` / ``kid`` / ``jku``, which only choose *which* trusted key to verify with (an
untrusted issuer or ``jku`` is refused before any key is looked up or fetched). The jti
is remembered last, so a token refused for another reason does not burn its id.
Every refusal is an ``AuthError`` whose ``reason`` is a fixed code, safe to log.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from joserfc import jws, jwt
from joserfc.errors import ExpiredTokenError, JoseError, MissingClaimError

from cds_hooks.auth.issuers import Issuer
from cds_hooks.auth.jwks import JwksCache

ASYMMETRIC_ALGORITHMS = frozenset(
    {"ES256", "ES384", "ES512", "RS256", "RS384", "RS512", "PS256", "PS384", "PS512"}
)
MAX_TOKEN_BYTES = 16 * 1024
_REASON = re.compile(r"[a-z_]{1,40}")

RememberJti = Callable[[str, str, datetime], bool]
"""``(issuer, jti, expires_at) -> False when already seen`` (the store's replay cache)."""


class AuthError(Exception):
    """The caller is not authenticated; ``reason`` is a fixed code for the log only."""

    def __init__(self, reason: str, issuer: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.issuer = issuer


@dataclass(frozen=True, slots=True)
class Identity:
    """A verified caller. Safe to log: no token, no patient data."""

    issuer: str
    jti: str
    kid: str
    expires_at: int
    tenant: str | None = None


@dataclass(frozen=True, slots=True)
class VerifierPolicy:
    clock_skew: int = 60
    max_lifetime: int = 3600
    """Longest ``exp - iat`` accepted (CDS Hooks: no more than an hour); bounds the replay cache."""


class TokenVerifier:
    def __init__(
        self,
        issuers: tuple[Issuer, ...],
        jwks: JwksCache,
        remember_jti: RememberJti,
        policy: VerifierPolicy = VerifierPolicy(),
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.issuers = {issuer.iss: issuer for issuer in issuers}
        self.jwks = jwks
        self.remember_jti = remember_jti
        self.policy = policy
        self.clock = clock

    def verify(self, token: str, audience: str) -> Identity:
        header, unverified = _unverified_parts(token)
        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in ASYMMETRIC_ALGORITHMS:
            raise AuthError("alg_not_allowed")
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise AuthError("kid_missing")
        typ = header.get("typ")
        if typ is not None and (not isinstance(typ, str) or typ.upper() != "JWT"):
            raise AuthError("typ_not_jwt")
        iss = unverified.get("iss")
        issuer = self.issuers.get(iss) if isinstance(iss, str) else None
        if issuer is None:
            raise AuthError("untrusted_issuer")
        key = self._key(issuer, kid, header.get("jku"))
        key_alg = getattr(key, "alg", None)
        if key_alg and key_alg != alg:
            raise AuthError("alg_does_not_match_key", issuer.iss)
        try:
            claims = jwt.decode(token, key, algorithms=[alg]).claims  # type: ignore[arg-type]
        except JoseError as error:
            raise AuthError(_jose_reason(error), issuer.iss) from None
        self._check_claims(claims, issuer, audience)
        expires_at = int(claims["exp"])
        tenant = claims.get("tenant")
        tenant = tenant if isinstance(tenant, str) else None
        if not self.remember_jti(
            issuer.iss, claims["jti"], datetime.fromtimestamp(expires_at, UTC)
        ):
            raise AuthError("replayed_jti", issuer.iss)
        return Identity(issuer.iss, claims["jti"], kid, expires_at, tenant)

    def _key(self, issuer: Issuer, kid: str, jku: Any) -> object:
        if jku is not None and jku not in issuer.jku:
            raise AuthError("jku_not_allowed", issuer.iss)
        key: object | None = None
        if issuer.keys is not None:
            key = next((k for k in issuer.keys.keys if k.kid == kid), None)
        else:
            url = jku if isinstance(jku, str) else issuer.jwks_url
            if url is not None:
                key = self.jwks.key_for(url, kid)
        if key is None:
            raise AuthError("unknown_kid", issuer.iss)
        return key

    def _check_claims(self, claims: Mapping[str, Any], issuer: Issuer, audience: str) -> None:
        now = int(self.clock())
        registry = jwt.JWTClaimsRegistry(
            now=now,
            leeway=self.policy.clock_skew,
            iss={"essential": True, "value": issuer.iss},
            aud={"essential": True},
            exp={"essential": True},
            iat={"essential": True},
            jti={"essential": True},
        )
        for name, reason in (("iat", "issued_in_future"), ("nbf", "not_yet_valid")):
            value = claims.get(name)
            if isinstance(value, int | float) and value > now + self.policy.clock_skew:
                raise AuthError(reason, issuer.iss)
        try:
            registry.validate(dict(claims))
        except ExpiredTokenError:
            raise AuthError("expired", issuer.iss) from None
        except MissingClaimError:
            raise AuthError("claim_missing", issuer.iss) from None
        except JoseError:
            raise AuthError("bad_claims", issuer.iss) from None
        aud = claims["aud"]
        if isinstance(aud, list) and len(aud) == 1:
            aud = aud[0]
        if aud != audience:
            raise AuthError("wrong_audience", issuer.iss)
        if claims["exp"] - claims["iat"] > self.policy.max_lifetime:
            raise AuthError("lifetime_too_long", issuer.iss)
        if issuer.tenants and claims.get("tenant") not in issuer.tenants:
            raise AuthError("tenant_not_allowed", issuer.iss)


def _jose_reason(error: JoseError) -> str:
    """joserfc's own code for why it refused (``bad_signature``, ``unsupported_header`` for
    a ``crit`` extension we do not know, ...): a fixed string per error class, never token
    content, so operators see the real reason rather than every refusal as a bad signature."""
    code = getattr(error, "error", "")
    return code if isinstance(code, str) and _REASON.fullmatch(code) else "bad_token"


def _unverified_parts(token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Header and claims before verification: used only to pick the issuer and key."""
    if not token or len(token) > MAX_TOKEN_BYTES or token.count(".") != 2:
        raise AuthError("malformed")
    try:
        compact = jws.extract_compact(token.encode("ascii"))
        header = compact.headers()
        claims = json.loads(compact.payload)
    except (JoseError, ValueError, UnicodeError):
        raise AuthError("malformed") from None
    if not isinstance(header, dict) or not isinstance(claims, dict):
        raise AuthError("malformed")
    return header, claims
