"""Print a development JWT shaped like Supabase's (`make token`).

    make token                                   # a signed-in user (a fixed dev id)
    make token ARGS="--user-id <uuid> --admin"   # a platform admin
    make token ARGS="--role service_role"        # the backend's own key

Unless --no-db is given, the user is also added to the local database's auth.users, so the
README's curl examples work against `make up` as written (ids there reference auth.users).
"""

import argparse
import asyncio
import json
import time
import uuid
from typing import Any

import asyncpg
import jwt

from localplus_common.config import Settings

DEV_USER_ID = uuid.UUID("00000000-0000-4000-8000-000000000001")


def mint(
    user_id: uuid.UUID | None,
    secret: str,
    role: str = "authenticated",
    admin: bool = False,
    email: str | None = None,
    expires_in: int = 3600,
    audience: str = "authenticated",
) -> str:
    now = int(time.time())
    claims: dict[str, Any] = {
        "aud": audience,
        "role": role,
        "iat": now,
        "exp": now + expires_in,
        "app_metadata": {"provider": "email", **({"role": "admin"} if admin else {})},
    }
    if user_id is not None:
        claims["sub"] = str(user_id)
        claims["email"] = email or f"{user_id}@example.test"
    return jwt.encode(claims, secret, algorithm="HS256")


async def ensure_user(database_url: str, user_id: uuid.UUID, email: str, admin: bool) -> None:
    conn = await asyncpg.connect(database_url, timeout=3)
    try:
        await conn.execute(
            "insert into auth.users (id, email, raw_app_meta_data) values ($1, $2, $3::jsonb) "
            "on conflict (id) do nothing",
            user_id,
            email,
            json.dumps({"role": "admin"} if admin else {}),
        )
    finally:
        await conn.close()


def main() -> None:
    parser = argparse.ArgumentParser(description="Print a development JWT.")
    parser.add_argument("--user-id", type=uuid.UUID, default=DEV_USER_ID)
    parser.add_argument("--role", choices=["authenticated", "service_role"], default="authenticated")
    parser.add_argument("--admin", action="store_true", help="mark a platform admin (app_metadata.role)")
    parser.add_argument("--email")
    parser.add_argument("--expires-in", type=int, default=24 * 3600, help="seconds")
    parser.add_argument("--no-db", action="store_true", help="do not add the user to auth.users")
    args = parser.parse_args()
    settings = Settings.from_env()
    user_id = None if args.role == "service_role" else args.user_id
    email = args.email or f"{args.user_id}@example.test"
    if user_id is not None and not args.no_db:
        try:
            asyncio.run(ensure_user(settings.database_url, user_id, email, args.admin))
        except (OSError, asyncpg.PostgresError, TimeoutError) as error:
            parser.exit(1, f"cannot add the user to {settings.database_url} ({error}); is `make up` running?\n")
    print(mint(user_id, settings.jwt_secret, args.role, args.admin, email, args.expires_in))


if __name__ == "__main__":
    main()
