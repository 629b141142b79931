"""Verified tokens are remembered until they expire (localplus_common.auth.TokenVerifier), so repeated
calls skip PyJWT, but never at the cost of trust: a token is never accepted past its `exp` plus the
clock skew Envoy allows too, a token signed by a key that left the JWKS stops being accepted, a
different secret verifies afresh, and nothing that failed is remembered."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from localplus_common import auth
from localplus_common.auth import TokenVerifier
from localplus_common.config import DEV_JWT_SECRET, Settings
from localplus_common.errors import ApiError
from localplus_dev.token import mint

# The skew Envoy's jwt_authn allows on exp and nbf (its clock_skew_seconds, which the gateway sets).
ENVOY_CLOCK_SKEW_S = 60
SETTINGS = replace(Settings.from_env({"LOCALPLUS_ENV": "dev"}), jwt_secret=DEV_JWT_SECRET, jwks="")


def bearer(token: str) -> str:
    return f"Bearer {token}"


def test_a_token_is_verified_once_while_it_is_valid(monkeypatch: pytest.MonkeyPatch) -> None:
    verifier = TokenVerifier(SETTINGS)
    token = mint(uuid.uuid4(), DEV_JWT_SECRET)
    decoded: list[str] = []
    real_decode = jwt.decode

    def counting_decode(*args: Any, **kwargs: Any) -> Any:
        decoded.append(args[0])
        return real_decode(*args, **kwargs)

    monkeypatch.setattr(auth.jwt, "decode", counting_decode)
    first = verifier.identify(bearer(token))
    for _ in range(100):
        assert verifier.identify(bearer(token)) == first
    assert len(decoded) == 1
    # One byte different is another token, verified (and refused) on its own.
    tampered = token[:-2] + ("A" if token[-2] != "A" else "B") + token[-1]
    with pytest.raises(ApiError):
        verifier.identify(bearer(tampered))


def skewed(seconds: int, **claims: Any) -> str:
    """A token minted by a machine whose clock is `seconds` ahead of ours (behind if negative)."""
    now = int(time.time()) + seconds
    payload = {"sub": str(uuid.uuid4()), "role": "authenticated", "aud": "authenticated", "iat": now, "exp": now + 3600}
    return jwt.encode({**payload, **claims}, DEV_JWT_SECRET, algorithm="HS256")


def test_a_remembered_token_is_never_trusted_past_its_exp_and_the_clock_skew() -> None:
    verifier = TokenVerifier(SETTINGS)
    # Expired 58 s ago: still within the skew Envoy allows too, and remembered for the 2 s left of it.
    now = int(time.time())
    token = skewed(0, iat=now - 3600, exp=now - ENVOY_CLOCK_SKEW_S + 2)
    verifier.identify(bearer(token))
    time.sleep(2.1)
    with pytest.raises(ApiError, match="expired"):
        verifier.identify(bearer(token))


def test_clocks_a_little_apart_are_allowed_the_skew_envoy_allows() -> None:
    """Envoy's jwt_authn allows CLOCK_SKEW_S (its clock_skew_seconds) on exp and nbf; a service reached
    through it, or directly over gRPC, must not refuse what it let through."""
    verifier = TokenVerifier(SETTINGS)
    ahead = ENVOY_CLOCK_SKEW_S - 10
    assert verifier.identify(bearer(skewed(ahead))).user_id is not None  # iat in our future
    assert verifier.identify(bearer(skewed(0, nbf=int(time.time()) + ahead))).user_id is not None
    assert verifier.identify(bearer(skewed(-3600 - ahead))).user_id is not None  # exp just passed
    with pytest.raises(ApiError, match="invalid"):
        verifier.identify(bearer(skewed(ENVOY_CLOCK_SKEW_S + 10)))
    with pytest.raises(ApiError, match="expired"):
        verifier.identify(bearer(skewed(-3600 - ENVOY_CLOCK_SKEW_S - 10)))


def test_another_secret_verifies_afresh() -> None:
    token = mint(uuid.uuid4(), DEV_JWT_SECRET)
    TokenVerifier(SETTINGS).identify(bearer(token))
    rotated = TokenVerifier(replace(SETTINGS, jwt_secret="another-secret-of-at-least-thirty-two-bytes!"))
    with pytest.raises(ApiError, match="invalid"):
        rotated.identify(bearer(token))


def test_failures_are_not_remembered() -> None:
    """The same bad token is refused each time (and a token refused while its key was unknown is accepted
    once the key is published: test_a_key_rotated_out_of_the_jwks_stops_its_remembered_tokens)."""
    verifier = TokenVerifier(SETTINGS)
    bad = mint(uuid.uuid4(), "a-secret-nobody-here-trusts-at-least-32-bytes")
    for _ in range(3):
        with pytest.raises(ApiError):
            verifier.identify(bearer(bad))


def test_the_cache_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(auth, "VERIFIED_CACHE_SIZE", 50)
    verifier = TokenVerifier(SETTINGS)
    for _ in range(200):
        verifier.identify(bearer(mint(uuid.uuid4(), DEV_JWT_SECRET)))
    assert len(verifier._verified) == 50


class Jwks:
    """A JWKS endpoint on 127.0.0.1 whose keys the test changes, as a key rotation does."""

    def __init__(self) -> None:
        self.keys: list[dict[str, Any]] = []
        jwks = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                body = json.dumps({"keys": jwks.keys}).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/.well-known/jwks.json"

    def publish(self, *keys: tuple[str, ec.EllipticCurvePrivateKey]) -> None:
        self.keys = [
            {
                **json.loads(jwt.algorithms.ECAlgorithm.to_jwk(key.public_key())),
                "kid": kid,
                "alg": "ES256",
                "use": "sig",
            }
            for kid, key in keys
        ]


@pytest.fixture
def jwks() -> Iterator[Jwks]:
    served = Jwks()
    thread = threading.Thread(target=served.server.serve_forever, daemon=True)
    thread.start()
    yield served
    served.server.shutdown()


def es256(key: ec.EllipticCurvePrivateKey, kid: str) -> str:
    claims = {"sub": str(uuid.uuid4()), "role": "authenticated", "aud": "authenticated", "exp": int(time.time()) + 600}
    return jwt.encode(claims, key, algorithm="ES256", headers={"kid": kid})


def test_a_key_rotated_out_of_the_jwks_stops_its_remembered_tokens(jwks: Jwks) -> None:
    old, new = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    verifier = TokenVerifier(replace(SETTINGS, jwks=jwks.url), jwks_lifespan_s=0.5)
    early = es256(new, "new")
    jwks.publish(("old", old))
    with pytest.raises(ApiError):
        verifier.identify(bearer(early))  # its key is not published yet
    token = es256(old, "old")
    verifier.identify(bearer(token))
    jwks.publish(("old", old), ("new", new))
    time.sleep(0.6)
    verifier.identify(bearer(token))  # the old key is still in the set
    assert verifier.identify(bearer(early)).user_id is not None  # and the earlier refusal was not kept
    jwks.publish(("new", new))
    time.sleep(0.6)
    with pytest.raises(ApiError):
        verifier.identify(bearer(token))
