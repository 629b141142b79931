"""ES256 tokens (Supabase's asymmetric signing keys) from a JWKS file, checked at the gateway and
again by the services; HS256 keeps working beside them."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from pathlib import Path

import asyncpg
import grpc
import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from localplus.events.v1 import events_pb2, events_pb2_grpc
from localplus_dev.stack import Stack, StackConfig
from tests.support import create_user, event_body

KID = "localplus-test-es256"


def _es256_token(key: ec.EllipticCurvePrivateKey, user_id: uuid.UUID, kid: str = KID) -> str:
    claims = {"sub": str(user_id), "role": "authenticated", "aud": "authenticated", "exp": int(time.time()) + 600}
    return jwt.encode(claims, key, algorithm="ES256", headers={"kid": kid})


@pytest.fixture(scope="module")
def signing_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


@pytest.fixture(scope="module")
def jwks_stack(tmp_path_factory: pytest.TempPathFactory, signing_key: ec.EllipticCurvePrivateKey) -> Iterator[Stack]:
    base = Path(tmp_path_factory.mktemp("jwks"))
    jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(signing_key.public_key()))
    (base / "jwks.json").write_text(json.dumps({"keys": [{**jwk, "kid": KID, "alg": "ES256", "use": "sig"}]}))
    config = StackConfig.isolated(base)
    running = Stack(replace(config, gateway=replace(config.gateway, jwks=str(base / "jwks.json"))))
    running.start()
    yield running
    running.stop()


@pytest.fixture(scope="module")
async def jwks_db(jwks_stack: Stack) -> AsyncIterator[asyncpg.Pool]:
    pool = await asyncpg.create_pool(jwks_stack.database_url, min_size=1, max_size=2)
    assert pool is not None
    yield pool
    await pool.close()


async def test_es256_token_is_accepted_by_gateway_and_service(
    jwks_stack: Stack, jwks_db: asyncpg.Pool, signing_key: ec.EllipticCurvePrivateKey
) -> None:
    user = await create_user(jwks_db)
    token = _es256_token(signing_key, user.id)
    async with httpx.AsyncClient(base_url=jwks_stack.gateway_url) as api:
        created = await api.post("/api/events", json=event_body(), headers={"authorization": f"Bearer {token}"})
        assert created.status_code == 200, created.text
        assert created.json()["created_by"] == str(user.id)
        # HS256 tokens from the project's secret still work next to the keys.
        hs256 = await api.post("/api/events", json=event_body(), headers=user.headers)
        assert hs256.status_code == 200, hs256.text
    async with grpc.aio.insecure_channel(jwks_stack.address("events")) as channel:
        direct = events_pb2_grpc.EventsServiceStub(channel)
        event = await direct.GetEvent(
            events_pb2.GetEventRequest(id=created.json()["id"]), metadata=[("authorization", f"Bearer {token}")]
        )
        assert event.title == created.json()["title"]


async def test_es256_token_from_another_key_is_refused_everywhere(jwks_stack: Stack, jwks_db: asyncpg.Pool) -> None:
    user = await create_user(jwks_db)
    forged = _es256_token(ec.generate_private_key(ec.SECP256R1()), user.id)
    headers = {"authorization": f"Bearer {forged}"}
    async with httpx.AsyncClient(base_url=jwks_stack.gateway_url) as api:
        assert (await api.post("/api/events", json=event_body(), headers=headers)).status_code == 401
        assert (await api.get("/api/events", headers=headers)).status_code == 401
    async with grpc.aio.insecure_channel(jwks_stack.address("events")) as channel:
        direct = events_pb2_grpc.EventsServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await direct.CreateEvent(events_pb2.CreateEventRequest(), metadata=[("authorization", f"Bearer {forged}")])
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
    written = await jwks_db.fetchval("select count(*) from public.events where created_by = $1", user.id)
    assert written == 0
