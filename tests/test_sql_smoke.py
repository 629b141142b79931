"""The migrations apply and the Supabase helpers behave on every database the suite runs on."""

import asyncpg


async def test_auth_uid_reads_the_request_claims(database_url: str) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        async with conn.transaction():
            await conn.execute(
                "select set_config('role', 'authenticated', true), set_config('request.jwt.claims', $1, true)",
                '{"sub": "00000000-0000-4000-8000-000000000009", "role": "authenticated"}',
            )
            assert str(await conn.fetchval("select auth.uid()")) == "00000000-0000-4000-8000-000000000009"
            assert await conn.fetchval("select auth.role()") == "authenticated"
        # After the transaction the setting reads as '' (CONTRACT §8): auth.uid() must be NULL, not an error.
        assert await conn.fetchval("select auth.uid()") is None
    finally:
        await conn.close()
