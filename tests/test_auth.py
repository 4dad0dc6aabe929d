"""Caller authentication: the verifier, the issuer registry, JWKS fetching, the modes.

The captured sandbox requests carry REAL ES384/ES256 signatures made by the public CDS
Hooks sandboxes; they verify here against the keys shipped in the package, with the
clock frozen at their issue time (they expired long ago). Their ``aud`` is the capture
service's URL (``http://127.0.0.1:<port>/cds-services/harness-…``), so the verifier is
given that URL as the expected audience; the app-level replay sets CDS_PUBLIC_BASE_URL
to the capture's origin so the discovery capture passes the whole app unchanged.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from joserfc import jwt
from joserfc.jws import JWSRegistry
from joserfc.registry import HeaderParameter
from prometheus_client import REGISTRY

from cds_hooks.app import create_app
from cds_hooks.auth.issuers import configured_issuers, parse_issuers, sandbox_issuers
from cds_hooks.auth.jwks import JwksCache, JwksPolicy
from cds_hooks.auth.verifier import AuthError, TokenVerifier, VerifierPolicy
from cds_hooks.config import ConfigError
from cds_hooks.network import address_refusal
from tests.conftest import sqlite_url
from tests.fhir_server import FhirServer, Reply, ok
from tests.security.tokens import ISSUER, Client, bearer

REQUESTS = Path(__file__).parent / "data" / "requests"
CAPTURES = sorted(p for p in REQUESTS.glob("*.json") if not p.name.startswith("jwks-"))


def capture(name: str) -> dict[str, Any]:
    return json.loads((REQUESTS / name).read_text(encoding="utf-8"))


def captured_token(exchange: dict[str, Any]) -> str:
    return str(exchange["headers"]["Authorization"].split(" ", 1)[1])


def captured_url(exchange: dict[str, Any]) -> str:
    return f"http://{exchange['headers']['Host']}{exchange['path']}"


class Jtis:
    """An in-memory replay cache with the store's contract."""

    def __init__(self) -> None:
        self.seen: dict[tuple[str, str], datetime] = {}

    def __call__(self, issuer: str, jti: str, expires_at: datetime) -> bool:
        if (issuer, jti) in self.seen:
            return False
        self.seen[(issuer, jti)] = expires_at
        return True


def verifier(issuers: Any, clock: float | None = None, **policy: Any) -> TokenVerifier:
    cache = JwksCache(JwksPolicy(timeout=1.0, refresh_interval=60.0))
    kwargs: dict[str, Any] = {} if clock is None else {"clock": lambda: clock}
    return TokenVerifier(tuple(issuers), cache, Jtis(), VerifierPolicy(**policy), **kwargs)


# --- the captured sandbox requests (real signatures) -----------------------------------


@pytest.mark.parametrize("path", CAPTURES, ids=lambda p: p.stem)
def test_captured_sandbox_tokens_verify_with_a_frozen_clock(path: Path) -> None:
    exchange = json.loads(path.read_text(encoding="utf-8"))
    claims = exchange["jwt_decoded_unverified"]["payload"]
    frozen = verifier(sandbox_issuers(), clock=claims["iat"] + 1)
    identity = frozen.verify(captured_token(exchange), captured_url(exchange))
    assert identity.issuer == claims["iss"]
    assert identity.jti == claims["jti"]
    assert identity.tenant is None


@pytest.mark.parametrize("path", CAPTURES, ids=lambda p: p.stem)
def test_captured_sandbox_tokens_are_refused_once_expired(path: Path) -> None:
    exchange = json.loads(path.read_text(encoding="utf-8"))
    claims = exchange["jwt_decoded_unverified"]["payload"]
    later = verifier(sandbox_issuers(), clock=claims["exp"] + 61, clock_skew=60)
    with pytest.raises(AuthError) as refused:
        later.verify(captured_token(exchange), captured_url(exchange))
    assert refused.value.reason == "expired"


def test_a_tampered_sandbox_token_fails_its_signature() -> None:
    exchange = capture("sandbox-order-sign-baclofen10-3tab-daily.json")
    header, payload, signature = captured_token(exchange).split(".")
    other = captured_token(capture("sandbox-discovery-get.json")).split(".")[1]
    claims = exchange["jwt_decoded_unverified"]["payload"]
    frozen = verifier(sandbox_issuers(), clock=claims["iat"] + 1)
    with pytest.raises(AuthError) as refused:
        frozen.verify(f"{header}.{other}.{signature}", "http://127.0.0.1:8092/cds-services")
    assert refused.value.reason == "bad_signature"
    assert payload != other


def test_a_sandbox_token_is_not_accepted_by_an_enforcing_verifier(ec_client: Client) -> None:
    exchange = capture("sandbox-discovery-get.json")
    claims = exchange["jwt_decoded_unverified"]["payload"]
    enforcing = verifier(parse_issuers([ec_client.issuer_config()]), clock=claims["iat"] + 1)
    with pytest.raises(AuthError) as refused:
        enforcing.verify(captured_token(exchange), captured_url(exchange))
    assert refused.value.reason == "untrusted_issuer"


# --- tokens signed by test clients -------------------------------------------------------


@pytest.fixture(scope="module")
def ec_client() -> Client:
    return Client(kind="EC")


@pytest.fixture(scope="module")
def rsa_client() -> Client:
    return Client(iss="https://rsa.example.org", kind="RSA")


AUD = "https://cds.example.org/cds-services/baclofen-order-sign"


@pytest.mark.parametrize("kind", ["EC", "RSA"])
def test_ec_and_rsa_tokens_verify_and_record_the_tenant(kind: str) -> None:
    client = Client(kind=kind)
    check = verifier(parse_issuers([client.issuer_config(tenants=["hospital-a"])]))
    identity = check.verify(client.token(AUD, tenant="hospital-a"), AUD)
    assert (identity.issuer, identity.tenant, identity.kid) == (ISSUER, "hospital-a", client.kid)
    with pytest.raises(AuthError) as refused:
        check.verify(client.token(AUD, tenant="hospital-b"), AUD)
    assert refused.value.reason == "tenant_not_allowed"


def test_aud_may_be_a_one_element_array_but_not_a_longer_one(ec_client: Client) -> None:
    check = verifier(parse_issuers([ec_client.issuer_config()]))
    assert check.verify(ec_client.token([AUD]), AUD).issuer == ISSUER
    with pytest.raises(AuthError) as refused:
        check.verify(ec_client.token([AUD, "https://elsewhere.example.org"]), AUD)
    assert refused.value.reason == "wrong_audience"


@pytest.mark.parametrize(
    ("claims", "reason"),
    [
        ({"jti": None}, "claim_missing"),
        ({"exp": None}, "claim_missing"),
        ({"iat": None}, "claim_missing"),
        ({"exp": 2_000_000_000 + 7200}, "lifetime_too_long"),
        ({"nbf": 2_000_000_000 + 600}, "not_yet_valid"),
    ],
)
def test_required_claims_and_limits(ec_client: Client, claims: dict[str, Any], reason: str) -> None:
    now = 2_000_000_000
    check = verifier(parse_issuers([ec_client.issuer_config()]), clock=now)
    with pytest.raises(AuthError) as refused:
        check.verify(ec_client.token(AUD, now=now, **claims), AUD)
    assert refused.value.reason == reason


def with_unknown_critical_header(client: Client, aud: str) -> str:
    """A validly signed token whose ``crit`` names an extension the service does not know."""
    signer = JWSRegistry(
        header_registry={"exp-ext": HeaderParameter("an extension", "int")},
        algorithms=[client.alg],
    )
    header = {"alg": client.alg, "typ": "JWT", "kid": client.kid}
    return jwt.encode(
        {**header, "crit": ["exp-ext"], "exp-ext": 1},
        client.claims(aud),
        client.key,
        algorithms=[client.alg],
        registry=signer,
    )


def test_a_token_with_an_unknown_critical_header_is_refused_for_that_reason(
    ec_client: Client,
) -> None:
    """A ``crit`` extension we do not understand must be refused (RFC 7515 §4.1.11); the
    log said ``bad_signature``, sending whoever investigates after the keys."""
    token = with_unknown_critical_header(ec_client, AUD)
    with pytest.raises(AuthError) as refused:
        verifier(parse_issuers([ec_client.issuer_config()])).verify(token, AUD)
    assert refused.value.reason == "unsupported_header"


def test_clock_skew_is_tolerated_within_the_configured_leeway(ec_client: Client) -> None:
    now = 2_000_000_000
    check = verifier(parse_issuers([ec_client.issuer_config()]), clock=now, clock_skew=60)
    assert check.verify(ec_client.token(AUD, now=now + 30), AUD).issuer == ISSUER
    assert check.verify(ec_client.token(AUD, now=now - 300 - 30), AUD).issuer == ISSUER
    with pytest.raises(AuthError):
        check.verify(ec_client.token(AUD, now=now + 120), AUD)


def test_a_key_declared_for_another_algorithm_is_not_used(ec_client: Client) -> None:
    jwks = ec_client.public_jwks()
    jwks["keys"][0]["alg"] = "ES512"
    check = verifier(parse_issuers([{"iss": ISSUER, "jwks": jwks}]))
    with pytest.raises(AuthError) as refused:
        check.verify(ec_client.token(AUD), AUD)
    assert refused.value.reason == "alg_does_not_match_key"


# --- the issuer registry -------------------------------------------------------------------


@pytest.mark.parametrize(
    "entry",
    [
        {"iss": ISSUER},
        {"jwks_url": "https://ehr.example.org/jwks"},
        {"iss": ISSUER, "jwks_url": "http://ehr.example.org/jwks"},
        {"iss": ISSUER, "jku": ["http://ehr.example.org/jwks"]},
        {"iss": ISSUER, "jwks_url": "https://ehr.example.org/jwks", "jwks": {"keys": []}},
        {"iss": ISSUER, "jwks": {"keys": [{"kty": "oct", "kid": "k", "k": "c2VjcmV0"}]}},
        {"iss": ISSUER, "jwks_url": "https://ehr.example.org/jwks", "tenant": ["a"]},
        {"iss": ISSUER, "jwks_url": "https://ehr.example.org/jwks", "tenants": [5]},
    ],
)
def test_bad_issuer_entries_are_refused_at_start_up(entry: dict[str, Any]) -> None:
    with pytest.raises(ConfigError):
        parse_issuers([entry])


def test_issuers_from_json_text_and_from_files(tmp_path: Path, ec_client: Client) -> None:
    text = json.dumps([ec_client.issuer_config()])
    assert parse_issuers(text)[0].pinned
    as_json = tmp_path / "issuers.json"
    as_json.write_text(
        json.dumps({"issuers": [{"iss": "https://a.example", "jwks_url": "https://a.example/k"}]})
    )
    as_toml = tmp_path / "issuers.toml"
    as_toml.write_text(
        '[[issuers]]\niss = "https://b.example"\njwks_url = "https://b.example/jwks"\n'
        'jku = ["https://b.example/jwks"]\ntenants = ["t1"]\n'
    )
    loaded = configured_issuers({"TRUSTED_ISSUERS": text, "TRUSTED_ISSUERS_FILE": str(as_toml)})
    assert [i.iss for i in loaded] == [ISSUER, "https://b.example"]
    assert loaded[1].tenants == ("t1",)
    assert (
        configured_issuers({"TRUSTED_ISSUERS_FILE": str(as_json)})[0].jwks_url
        == "https://a.example/k"
    )
    with pytest.raises(ConfigError):
        configured_issuers(
            {"TRUSTED_ISSUERS": text, "TRUSTED_ISSUERS_FILE": str(tmp_path / "nope.json")}
        )
    with pytest.raises(ConfigError):
        parse_issuers("[{not json")
    with pytest.raises(ConfigError):
        parse_issuers([ec_client.issuer_config(), ec_client.issuer_config()])


def test_sandbox_issuers_are_the_packaged_public_keys_only() -> None:
    issuers = {i.iss: i for i in sandbox_issuers()}
    assert set(issuers) == {
        "https://sandbox.cds-hooks.org",
        "http://legacy-sandbox.cds-hooks.org",
        "https://legacy-sandbox.cds-hooks.org",
    }
    assert all(i.pinned and i.jwks_url is None for i in issuers.values())
    sandbox = issuers["https://sandbox.cds-hooks.org"]
    assert [k.kid for k in sandbox.keys.keys] == ["44823f3d-0b01-4a6c-a80e-b9d3e8a7226f"]  # type: ignore[union-attr]


# --- JWKS over the network -----------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_jwks_is_fetched_cached_refreshed_on_rotation_and_survives_an_outage() -> None:
    old, new, newer = Client(), Client(), Client()
    clock = Clock()
    with FhirServer() as server:
        served = {"jwks": old.public_jwks()}
        server.route("jwks", lambda _: ok(served["jwks"]))
        url = server.base_url + "/jwks"
        cache = JwksCache(
            JwksPolicy(timeout=1.0, refresh_interval=60.0, max_age=3600.0), clock=clock
        )
        check = TokenVerifier(parse_issuers([{"iss": ISSUER, "jwks_url": url}]), cache, Jtis())

        assert check.verify(old.token(AUD), AUD).kid == old.kid
        assert check.verify(old.token(AUD), AUD).kid == old.kid
        assert len(server.requests) == 1, "keys are cached"

        served["jwks"] = {"keys": [*old.public_jwks()["keys"], *new.public_jwks()["keys"]]}
        clock.now += 61
        assert check.verify(new.token(AUD), AUD).kid == new.kid, "unknown kid refetches"
        assert len(server.requests) == 2

        with pytest.raises(AuthError) as refused:
            check.verify(newer.token(AUD), AUD)
        assert refused.value.reason == "unknown_kid"
        assert len(server.requests) == 2, "refetching is rate-limited"

        server.route("jwks", Reply(status=503))
        clock.now += 4000
        assert check.verify(old.token(AUD), AUD).kid == old.kid, "an outage keeps cached keys"
        assert eventually(lambda: len(server.requests) == 3), "stale keys are refetched"


def eventually(condition: Callable[[], bool], seconds: float = 10.0) -> bool:
    """For work done in the background (a refresh of stale keys is never waited for)."""
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def test_a_jwks_that_cannot_be_fetched_refuses_the_call_without_raising() -> None:
    client = Client()
    with FhirServer() as server:
        server.route("jwks", Reply(body=b"<html>", headers={"Content-Type": "text/html"}))
        url = server.base_url + "/jwks"
        check = TokenVerifier(
            parse_issuers([{"iss": ISSUER, "jwks_url": url}]), JwksCache(JwksPolicy()), Jtis()
        )
        with pytest.raises(AuthError) as refused:
            check.verify(client.token(AUD), AUD)
    assert refused.value.reason == "unknown_kid"


def test_jku_is_fetched_only_when_on_the_issuers_allowlist() -> None:
    client = Client()
    with FhirServer() as server:
        server.route("jwks", ok(client.public_jwks()))
        server.route("evil", ok(client.public_jwks()))
        allowed = server.base_url + "/jwks"
        check = TokenVerifier(
            parse_issuers([{"iss": ISSUER, "jku": [allowed]}]), JwksCache(JwksPolicy()), Jtis()
        )
        assert check.verify(client.token(AUD, header={"jku": allowed}), AUD).kid == client.kid
        with pytest.raises(AuthError) as refused:
            check.verify(client.token(AUD, header={"jku": server.base_url + "/evil"}), AUD)
        assert refused.value.reason == "jku_not_allowed"
        assert server.requests_to("evil") == []


def test_jwks_is_never_fetched_from_a_metadata_address() -> None:
    assert address_refusal("169.254.169.254", named_by_allowlist=True)
    assert address_refusal("[fe80::1]", named_by_allowlist=True)
    assert address_refusal("::ffff:169.254.169.254", named_by_allowlist=True)
    assert address_refusal("10.1.2.3", named_by_allowlist=False)
    assert address_refusal("10.1.2.3", named_by_allowlist=True) is None
    assert address_refusal("127.0.0.1", named_by_allowlist=True) is None


# --- modes and the Flask integration -------------------------------------------------------


PUBLIC = "https://cds.example.org"


def base_config(tmp_path: Path, **extra: Any) -> dict[str, Any]:
    return {"TESTING": True, "DATABASE_URL": sqlite_url(tmp_path, "s.sqlite3"), **extra}


def test_auth_off_is_refused_in_production(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        create_app(base_config(tmp_path, ENV="production", AUTH_MODE="off"))
    with pytest.raises(ConfigError):
        create_app(base_config(tmp_path, ENV="development", AUTH_MODE="trust-me"))


def test_default_modes_are_off_in_development_and_enforce_in_production(tmp_path: Path) -> None:
    development = create_app(base_config(tmp_path, ENV="development"))
    assert development.extensions["baclofen_settings"].auth_mode == "off"
    assert development.test_client().get("/cds-services").status_code == 200
    production = create_app(base_config(tmp_path, ENV="production", PUBLIC_BASE_URL=PUBLIC))
    assert production.extensions["baclofen_settings"].auth_mode == "enforce"
    client = production.test_client()
    assert client.get("/cds-services").status_code == 401
    assert client.get("/readyz").status_code == 503, "no trusted issuer: not ready"


def test_bad_trusted_issuers_stop_start_up(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        create_app(base_config(tmp_path, ENV="production", TRUSTED_ISSUERS='[{"iss": "x"}]'))


def test_sandbox_mode_warns_loudly_at_start_up(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING):
        create_app(base_config(tmp_path, ENV="production", AUTH_MODE="sandbox"))
    assert any("private key is published" in r.getMessage() for r in caplog.records)


@pytest.fixture
def sandbox_app_client(tmp_path: Path) -> FlaskClient:
    exchange = capture("sandbox-discovery-get.json")
    frozen = exchange["jwt_decoded_unverified"]["payload"]["iat"] + 1
    app = create_app(
        base_config(
            tmp_path,
            ENV="development",
            AUTH_MODE="sandbox",
            PUBLIC_BASE_URL="http://127.0.0.1:8092",
            AUTH_CLOCK=lambda: frozen,
        )
    )
    return app.test_client()


def test_captured_sandbox_discovery_call_passes_the_app(sandbox_app_client: FlaskClient) -> None:
    """(Replay is not asserted here: the store forgets a jti once its token has expired
    by the real clock, and these tokens have; tests/security replays fresh tokens.)"""
    exchange = capture("sandbox-discovery-get.json")
    response = sandbox_app_client.get("/cds-services", headers=bearer(captured_token(exchange)))
    assert response.status_code == 200
    assert len(response.get_json()["services"]) == 4


def test_captured_hook_token_is_valid_only_for_the_url_it_was_minted_for(
    sandbox_app_client: FlaskClient,
) -> None:
    exchange = capture("sandbox-order-select-no-medication-yet.json")
    headers = bearer(captured_token(exchange))
    elsewhere = sandbox_app_client.post(
        "/cds-services/baclofen-order-select", json=exchange["body"], headers=headers
    )
    assert elsewhere.status_code == 401
    # Its own URL names the capture harness's service, which we do not have: a 404 after
    # authentication succeeded (a token problem would have been a 401).
    own = sandbox_app_client.post(exchange["path"], json=exchange["body"], headers=headers)
    assert own.status_code == 404


def test_enforce_mode_refuses_to_start_without_a_public_base_url(
    tmp_path: Path, ec_client: Client
) -> None:
    """Without it the audience followed the Host header: a token minted for another host's
    URL passed when the caller sent that host."""
    with pytest.raises(ConfigError, match="CDS_PUBLIC_BASE_URL"):
        create_app(
            base_config(
                tmp_path,
                ENV="development",
                AUTH_MODE="enforce",
                TRUSTED_ISSUERS=[ec_client.issuer_config()],
            )
        )


def production_client(tmp_path: Path, issuer: Client, **extra: Any) -> FlaskClient:
    """The app as deployed: enforce mode (the production default), ``issuer`` trusted."""
    config = base_config(
        tmp_path,
        ENV="production",
        PUBLIC_BASE_URL=PUBLIC,
        TRUSTED_ISSUERS=[issuer.issuer_config()],
        **extra,
    )
    return create_app(config).test_client()


def test_health_metrics_and_preflight_need_no_token(tmp_path: Path, ec_client: Client) -> None:
    client = production_client(tmp_path, ec_client, CORS_ORIGINS="https://ehr.example.org")
    assert client.get("/healthz").status_code == 200
    assert client.get("/readyz").status_code == 200
    assert client.get("/metrics").status_code == 200
    preflight = client.options(
        "/cds-services/baclofen-order-sign",
        headers={
            "Origin": "https://ehr.example.org",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization,content-type",
        },
    )
    assert preflight.status_code == 200
    assert preflight.headers["Access-Control-Allow-Origin"] == "https://ehr.example.org"
    assert client.get("/cds-services").status_code == 401


def test_the_log_line_and_metric_for_an_unknown_critical_header_name_it(
    tmp_path: Path, ec_client: Client, caplog: pytest.LogCaptureFixture
) -> None:
    """What an operator reads, not only the verifier's reason: the app's "authentication
    failed" line and the refusal counter say ``unsupported_header``, never ``bad_signature``."""
    client = production_client(tmp_path, ec_client)
    counted = refusals_counted("unsupported_header")
    token = with_unknown_critical_header(ec_client, PUBLIC + "/cds-services")
    with caplog.at_level(logging.WARNING, logger="cds_hooks.auth"):
        response = client.get("/cds-services", headers=bearer(token))
    assert response.status_code == 401
    refusals = [r for r in caplog.records if r.getMessage() == "authentication failed"]
    assert [getattr(r, "reason", None) for r in refusals] == ["unsupported_header"]
    assert refusals_counted("unsupported_header") == counted + 1


def refusals_counted(reason: str) -> float:
    return REGISTRY.get_sample_value("cds_auth_failures_total", {"reason": reason}) or 0.0


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    junk=st.text(max_size=200),
    part=st.sampled_from([0, 1, 2]),
)
def test_any_corruption_of_a_token_is_an_auth_error_never_a_crash(
    ec_client: Client, junk: str, part: int
) -> None:
    check = verifier(parse_issuers([ec_client.issuer_config()]))
    parts = ec_client.token(AUD).split(".")
    parts[part] = junk
    with pytest.raises(AuthError):
        check.verify(".".join(parts), AUD)
    with pytest.raises(AuthError):
        check.verify(junk, AUD)
