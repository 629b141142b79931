"""Who is calling: verify the Supabase-style JWT from gRPC metadata.

Envoy already checks tokens at the edge, but internal gRPC callers bypass it, so every service
verifies again here. No token means anonymous; a bad token is always an error, never anonymous.
"""

import functools
import hashlib
import json
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from uuid import UUID

import jwt

from localplus_common.config import Settings
from localplus_common.errors import unauthenticated

AUDIENCE = "authenticated"
# How many verified tokens are remembered, and how long a fetched JWKS is trusted before it is fetched again.
VERIFIED_CACHE_SIZE = 10_000
JWKS_LIFESPAN_S = 300.0
ASYMMETRIC_ALGORITHMS = ["ES256", "RS256"]
# Seconds a token's exp, nbf and iat may be off our clock: what Envoy's jwt_authn allows (the gateway sets its
# clock_skew_seconds from this), so a token Envoy let through, or its twin sent straight to a service, passes.
CLOCK_SKEW_S = 60
# The roles a token may carry (CONTRACT §3). Not `anon`: no token is the anonymous caller, and one signed
# for `anon` would run as anon with its sub or app_metadata, which the policies read as that user's.
TOKEN_ROLES = {"authenticated", "service_role"}


@dataclass(frozen=True)
class Identity:
    """The caller, as Postgres will see it: a database role plus the JWT claims."""

    role: str
    user_id: UUID | None = None
    claims: dict[str, Any] = field(default_factory=dict)

    @property
    def is_signed_in(self) -> bool:
        return self.user_id is not None or self.role == "service_role"

    @property
    def is_platform_admin(self) -> bool:
        app_metadata = self.claims.get("app_metadata") or {}
        return self.role == "service_role" or (isinstance(app_metadata, dict) and app_metadata.get("role") == "admin")

    @functools.cached_property
    def claims_json(self) -> str:
        """Once per identity: a cached token's identity serves all of its client's calls."""
        return json.dumps(self.claims or {"role": self.role})


ANONYMOUS = Identity(role="anon")
# The server itself: for its own writes after the caller's access was checked, and for callers with no
# user at all (Stripe's webhooks, the sweeper, the reconciler).
SERVER = Identity(role="service_role", claims={"role": "service_role"})


@dataclass(frozen=True)
class _Verified:
    """A token verified before: who it is, until when (its `exp`), and the asymmetric key that signed it."""

    identity: Identity
    expires_at: float
    key_id: str | None


class TokenVerifier:
    """HS256 with the project's JWT secret, plus ES256/RS256 keys from SUPABASE_JWKS.

    A verified token is remembered (by its sha256, in a bounded LRU) until its `exp` + CLOCK_SKEW_S, so a
    client's repeated calls skip PyJWT's parsing and signature check; an entry signed by a JWKS key is trusted
    only while that key is still in the set (JWKS_LIFESPAN_S after a rotation at the latest). Nothing
    that failed is remembered, and a token that differs in one byte is a different entry.
    """

    def __init__(self, settings: Settings, *, jwks_lifespan_s: float = JWKS_LIFESPAN_S) -> None:
        self._secret = settings.jwt_secret
        self._jwk_client: jwt.PyJWKClient | None = None
        self._jwk_set: jwt.PyJWKSet | None = None
        if settings.jwks.startswith(("http://", "https://")):
            # Keys are looked up in the fetched set each time (cached for the lifespan), not kept on their
            # own by kid: PyJWT's `cache_keys` would go on trusting a key after it left the set.
            self._jwk_client = jwt.PyJWKClient(settings.jwks, cache_keys=False, lifespan=jwks_lifespan_s)
        elif settings.jwks:
            self._jwk_set = jwt.PyJWKSet.from_json(Path(settings.jwks).read_text())
        self._verified: OrderedDict[bytes, _Verified] = OrderedDict()

    def identify(self, authorization: str | None) -> Identity:
        if not authorization:
            return ANONYMOUS
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise unauthenticated("authorization must be 'Bearer <jwt>'")
        token = token.strip()
        digest = hashlib.sha256(token.encode()).digest()
        known = self._verified.get(digest)
        if known is not None and known.expires_at > time.time() and self._key_still_in_set(known.key_id):
            self._verified.move_to_end(digest)
            return known.identity
        self._verified.pop(digest, None)
        identity, key_id = self._identity_of(token)
        self._verified[digest] = _Verified(identity, float(identity.claims["exp"]) + CLOCK_SKEW_S, key_id)
        if len(self._verified) > VERIFIED_CACHE_SIZE:
            self._verified.popitem(last=False)
        return identity

    def _key_still_in_set(self, key_id: str | None) -> bool:
        if key_id is None or self._jwk_client is None:
            return True  # the HS256 secret and a JWKS file stay until the process restarts
        try:
            return any(key.key_id == key_id for key in self._jwk_client.get_signing_keys())
        except jwt.PyJWKClientError:
            return False

    def _identity_of(self, token: str) -> tuple[Identity, str | None]:
        claims = self._decode(token)
        role = claims.get("role")
        if role not in TOKEN_ROLES:
            raise unauthenticated("token role must be authenticated or service_role")
        user_id: UUID | None = None
        if claims.get("sub") is not None:
            try:
                user_id = UUID(str(claims["sub"]))
            except ValueError:
                raise unauthenticated("token sub must be a user id (UUID)") from None
        if role == "authenticated" and user_id is None:
            raise unauthenticated("token has no sub")
        header = jwt.get_unverified_header(token)
        signed_by_jwks = self._jwk_client is not None and header.get("alg") in ASYMMETRIC_ALGORITHMS
        return Identity(role=role, user_id=user_id, claims=claims), header.get("kid") if signed_by_jwks else None

    def _decode(self, token: str) -> dict[str, Any]:
        try:
            header = jwt.get_unverified_header(token)
            algorithm = header.get("alg")
            key: Any
            if algorithm == "HS256":
                if not self._secret:  # a service configured with SUPABASE_JWKS only
                    raise unauthenticated("HS256 tokens are not accepted here")
                key = self._secret
            elif algorithm in ASYMMETRIC_ALGORITHMS:
                key = self._asymmetric_key(token, header)
            else:
                raise unauthenticated(f"token algorithm {algorithm!r} is not accepted")
            return jwt.decode(
                token,
                key,
                algorithms=[algorithm],
                audience=AUDIENCE,
                leeway=CLOCK_SKEW_S,
                options={"require": ["exp", "role"]},
            )
        except jwt.ExpiredSignatureError:
            raise unauthenticated("token has expired") from None
        except jwt.InvalidAudienceError:
            raise unauthenticated("token audience must be 'authenticated'") from None
        except (jwt.InvalidTokenError, jwt.PyJWKClientError):
            raise unauthenticated("token is invalid") from None

    def _asymmetric_key(self, token: str, header: dict[str, Any]) -> Any:
        if self._jwk_client is not None:
            return self._jwk_client.get_signing_key_from_jwt(token).key
        if self._jwk_set is not None:
            kid = header.get("kid")
            for jwk in self._jwk_set.keys:
                if kid is None or jwk.key_id == kid:
                    return jwk.key
        raise unauthenticated("no key configured for this token (set SUPABASE_JWKS)")


def bearer_from_metadata(metadata: Any) -> str | None:
    for key, value in metadata or ():
        if key == "authorization":
            return value if isinstance(value, str) else value.decode()
    return None
