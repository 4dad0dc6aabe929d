"""Test-only CDS clients: key pairs generated per test run, and the tokens they sign.

Nothing here is a real client's key; the sandbox's own (public) private key is deliberately
not used: the captured sandbox requests exercise those real signatures instead.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import uuid
from typing import Any

from joserfc import jwt
from joserfc.jwk import ECKey, RSAKey

ISSUER = "https://ehr.example.org"
OTHER_ISSUER = "https://other-ehr.example.org"
PUBLIC_BASE = "https://cds.example.org"


class Client:
    """A CDS client (EHR) with its own signing key."""

    def __init__(self, iss: str = ISSUER, kind: str = "EC", kid: str | None = None) -> None:
        self.iss = iss
        self.kid = kid or f"{kind.lower()}-{uuid.uuid4()}"
        if kind == "EC":
            self.key: ECKey | RSAKey = ECKey.generate_key("P-384", {"kid": self.kid}, private=True)
            self.alg = "ES384"
        else:
            self.key = RSAKey.generate_key(2048, {"kid": self.kid}, private=True)
            self.alg = "RS384"

    def public_jwks(self) -> dict[str, Any]:
        return {"keys": [self.key.as_dict(private=False)]}

    def issuer_config(self, **extra: Any) -> dict[str, Any]:
        return {"iss": self.iss, "jwks": self.public_jwks(), **extra}

    def claims(
        self, aud: str | list[str], now: float | None = None, **overrides: Any
    ) -> dict[str, Any]:
        issued = int(time.time() if now is None else now)
        claims: dict[str, Any] = {
            "iss": self.iss,
            "aud": aud,
            "exp": issued + 300,
            "iat": issued,
            "jti": str(uuid.uuid4()),
        }
        claims.update(overrides)
        return {k: v for k, v in claims.items() if v is not None}

    def token(
        self,
        aud: str | list[str],
        *,
        header: dict[str, Any] | None = None,
        now: float | None = None,
        **claims: Any,
    ) -> str:
        head = {"alg": self.alg, "typ": "JWT", "kid": self.kid, **(header or {})}
        return jwt.encode(head, self.claims(aud, now, **claims), self.key, algorithms=[self.alg])


def b64(data: dict[str, Any]) -> str:
    raw = json.dumps(data, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def alg_none_token(client: Client, aud: str) -> str:
    header = {"alg": "none", "typ": "JWT", "kid": client.kid}
    return f"{b64(header)}.{b64(client.claims(aud))}."


def hs256_with_public_key(client: Client, aud: str) -> str:
    """The classic key-confusion attack: HMAC keyed with the issuer's public key (PEM).

    Built by hand: joserfc itself refuses to use a public key as an HMAC secret.
    """
    header = {"alg": "HS256", "typ": "JWT", "kid": client.kid}
    signing_input = f"{b64(header)}.{b64(client.claims(aud))}"
    secret = client.key.as_pem(private=False)
    mac = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{base64.urlsafe_b64encode(mac).rstrip(b'=').decode()}"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}
