"""Who is calling: verify the Supabase-style JWT from gRPC metadata.

Envoy already checks tokens at the edge, but internal gRPC callers bypass it, so every service
verifies again here. No token means anonymous; a bad token is always an error, never anonymous.
"""

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from uuid import UUID

import jwt

from localplus_common.config import Settings
from localplus_common.errors import unauthenticated

AUDIENCE = "authenticated"
ASYMMETRIC_ALGORITHMS = ["ES256", "RS256"]
DATABASE_ROLES = {"anon", "authenticated", "service_role"}


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

    @property
    def claims_json(self) -> str:
        return json.dumps(self.claims or {"role": self.role})


ANONYMOUS = Identity(role="anon")
# The server itself: for its own writes after the caller's access was checked, and for callers with no
# user at all (Stripe's webhooks, the sweeper, the reconciler).
SERVER = Identity(role="service_role", claims={"role": "service_role"})


class TokenVerifier:
    """HS256 with the project's JWT secret, plus ES256/RS256 keys from SUPABASE_JWKS."""

    def __init__(self, settings: Settings) -> None:
        self._secret = settings.jwt_secret
        self._jwk_client: jwt.PyJWKClient | None = None
        self._jwk_set: jwt.PyJWKSet | None = None
        if settings.jwks.startswith(("http://", "https://")):
            self._jwk_client = jwt.PyJWKClient(settings.jwks, cache_keys=True)
        elif settings.jwks:
            self._jwk_set = jwt.PyJWKSet.from_json(Path(settings.jwks).read_text())

    def identify(self, authorization: str | None) -> Identity:
        if not authorization:
            return ANONYMOUS
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise unauthenticated("authorization must be 'Bearer <jwt>'")
        claims = self._decode(token.strip())
        role = claims.get("role")
        if role not in DATABASE_ROLES:
            raise unauthenticated("token role must be authenticated or service_role")
        user_id: UUID | None = None
        if claims.get("sub") is not None:
            try:
                user_id = UUID(str(claims["sub"]))
            except ValueError:
                raise unauthenticated("token sub must be a user id (UUID)") from None
        if role == "authenticated" and user_id is None:
            raise unauthenticated("token has no sub")
        return Identity(role=role, user_id=user_id, claims=claims)

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
