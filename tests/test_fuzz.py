"""schemathesis against the live gateway, from the document it serves at /api/openapi.json: every
route, as an anonymous caller, as a platform admin (who owns the events used) and as `service_role`,
with data that fits the document (path ids generated, and the ids of a real published event) and data
that does not. No response may be a 5xx, every response must match the documented status codes,
content types and schemas, an anonymous caller must be refused by the gateway itself where a token is
required (401, or a 400 for a request the transcoder cannot read, which it reads before the token), and
a request that is rejected (4xx) must not have written anything.

The write check: around each request the test reads, for every table in the database, its row count
and the newest `xmin` among its rows. Any committed insert, update or delete changes one of the two
(an update writes a row version with a new, higher xmin; a delete lowers the count), and a write that
was rolled back changes neither, so a rejected request whose fingerprint moved committed a write.
This holds while nothing else writes during the request: pytest runs one test at a time and the
services write only when asked (the fuzzing's own successful requests are before or after, never
during, a rejected one).

The budget is fixed and the generation derandomized, so a run is repeatable: FUZZ_EXAMPLES (default
3) examples per route, identity and kind of data; `make fuzz` runs this test with 100."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass, field

import asyncpg
import hypothesis
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given
from schemathesis import APIOperation, GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import FailureGroup
from schemathesis.core.result import Ok
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from localplus_common.unsubscribe import sign, signing_secret_from_env
from localplus_dev.stack import Stack
from tests.support import User, event_body, service_role_token

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "3"))
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
]
SETTINGS = hypothesis.settings(
    max_examples=EXAMPLES,
    derandomize=True,
    database=None,
    deadline=None,
    # Every example is checked and kept, so nothing needs shrinking.
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=list(HealthCheck),
)


# Written on their own clocks, whatever request is in flight: by the recurrence service's horizon job (it
# records each event's version once its occurrences are built), and by the notifications worker (it
# claims messages and marks them sent). A request cannot write a notification without writing the change
# it tells about (only triggers on other tables write them), which the check still sees.
BACKGROUND_WRITES = ["public.event_series", "public.notifications"]


class Tables:
    """(row count, newest xmin) of every table but BACKGROUND_WRITES, read with a connection of its own."""

    def __init__(self, database_url: str) -> None:
        self.loop = asyncio.new_event_loop()
        self.conn: asyncpg.Connection = self.loop.run_until_complete(asyncpg.connect(database_url))
        parts = self.loop.run_until_complete(
            self.conn.fetchval(
                "select string_agg(format('select %L as t, count(*) as n, max(xmin::text::bigint) as x from %I.%I',"
                " n.nspname || '.' || c.relname, n.nspname, c.relname), ' union all ') "
                "from pg_class c join pg_namespace n on n.oid = c.relnamespace "
                "where c.relkind in ('r', 'p') and n.nspname not in ('pg_catalog', 'information_schema')"
                " and n.nspname not like 'pg\\_%' and (n.nspname || '.' || c.relname) <> all($1::text[])",
                BACKGROUND_WRITES,
            )
        )
        self.query: str = parts

    def fingerprint(self) -> dict[str, tuple[int, int | None]]:
        rows = self.loop.run_until_complete(self.conn.fetch(self.query))
        return {row["t"]: (row["n"], row["x"]) for row in rows}

    def close(self) -> None:
        self.loop.run_until_complete(self.conn.close())
        self.loop.close()


@pytest.fixture
def tables(stack: Stack) -> Iterator[Tables]:
    tables = Tables(stack.database_url)
    yield tables
    tables.close()


@dataclass(frozen=True)
class Finding:
    operation: str
    identity: str
    data: str
    problem: str
    curl: str


def published_event(session: requests.Session, base_url: str, owner: User) -> dict[str, str]:
    """Path parameters naming a new published event of `owner` (and `owner` as the user and business, its
    occurrence, a city, a venue, an unsubscribe link of `owner`'s)."""
    created = session.post(f"{base_url}/api/events", json=event_body(capacity=10), headers=owner.headers)
    assert created.status_code == 200, created.text
    event_id = created.json()["id"]
    approved = session.post(f"{base_url}/api/events/{event_id}:approve", json={}, headers=owner.headers)
    assert approved.status_code == 200, approved.text
    venue = session.post(
        f"{base_url}/api/venues",
        json={"city": "bangkok", "name": "Fuzz Hall"},  # the owner is an admin: a venue of no business
        headers=owner.headers,
    )
    assert venue.status_code == 200, venue.text
    # A one-off event's single occurrence has the event's id; Bangkok is a seeded city.
    return {
        "id": event_id,
        "event_id": event_id,
        "occurrence_id": event_id,
        "user_id": str(owner.id),
        "business_id": str(owner.id),
        "slug": "bangkok",
        "venue_id": venue.json()["id"],
        "token": sign(signing_secret_from_env(), owner.id, "event_reminder", "email"),
    }


def refused_at_the_gateway(response: schemathesis.Response) -> bool:
    """A 401, or another of Envoy's own errors (the transcoder reads the request before jwt_authn)."""
    if response.status_code == 401:
        return True
    try:
        body = response.json()
    except ValueError:
        return False
    return 400 <= response.status_code < 500 and isinstance(body, dict) and isinstance(body.get("code"), str)


@dataclass
class Fuzzer:
    base_url: str
    session: requests.Session
    tables: Tables
    findings: list[Finding] = field(default_factory=list)
    sent: int = 0

    def fuzz(
        self,
        operation: APIOperation,
        identity: str,
        headers: dict[str, str],
        data: str,
        mode: GenerationMode,
        path_parameters: dict[str, str] | None,
    ) -> None:
        @SETTINGS
        @given(case=operation.as_strategy(generation_mode=mode, path_parameters=path_parameters))
        def example(case: schemathesis.Case) -> None:
            for problem in self.problems(case, identity, headers):
                curl = case.as_curl_command(headers=headers, base_url=self.base_url)
                self.findings.append(Finding(operation.label, identity, data, problem, curl))

        with contextlib.suppress(hypothesis.errors.Unsatisfiable):  # e.g. only a string to make invalid
            example()

    def problems(self, case: schemathesis.Case, identity: str, headers: dict[str, str]) -> list[str]:
        self.sent += 1
        before = self.tables.fingerprint()
        response = case.call(base_url=self.base_url, session=self.session, headers=headers, timeout=30)
        after = self.tables.fingerprint()
        problems = []
        try:
            case.validate_response(response, checks=CHECKS, headers=headers)
        except FailureGroup as failures:
            problems += [f"{failure.title}: {failure.message}" for failure in failures.exceptions]
        if 400 <= response.status_code < 500 and before != after:
            changed = sorted(t for t in after if before.get(t) != after[t])
            problems.append(f"rejected with {response.status_code}, but wrote to {', '.join(changed)}")
        security = case.operation.definition.raw["security"]  # [] is no token at all, [{}, ...] an optional one
        token_required = bool(security) and {} not in security
        if identity == "anonymous" and token_required and not refused_at_the_gateway(response):
            problems.append(f"needs a token, but answered {response.status_code} without one")
        return problems


def test_fuzz_every_route(stack: Stack, admin: User, tables: Tables) -> None:
    schema = schemathesis.openapi.from_url(f"{stack.gateway_url}/api/openapi.json")
    # The identities below are the tokens sent; no made-up ones.
    schema.config.generation.update(with_security_parameters=False)
    identities: dict[str, dict[str, str]] = {
        "anonymous": {},
        "admin": admin.headers,
        "service_role": {"authorization": f"Bearer {service_role_token()}"},
    }
    operations = []
    for result in schema.get_all_operations():
        assert isinstance(result, Ok), result
        operations.append(result.ok())
    with requests.Session() as session:
        fuzzer = Fuzzer(stack.gateway_url, session, tables)
        for operation in operations:
            names = [parameter.name for parameter in operation.path_parameters]
            for identity, headers in identities.items():
                fuzzer.fuzz(operation, identity, headers, "valid", GenerationMode.POSITIVE, None)
                fuzzer.fuzz(operation, identity, headers, "invalid", GenerationMode.NEGATIVE, None)
                if names:
                    # A new event each time: an earlier run may have deleted or cancelled the last one.
                    real = published_event(session, stack.gateway_url, admin)
                    ids = {name: real[name] for name in names}
                    fuzzer.fuzz(operation, identity, headers, "valid, real ids", GenerationMode.POSITIVE, ids)
                    fuzzer.fuzz(operation, identity, headers, "invalid, real ids", GenerationMode.NEGATIVE, ids)
    assert fuzzer.sent >= len(operations) * len(identities) * EXAMPLES
    # One example of each distinct problem.
    distinct = {(f.operation, f.problem.splitlines()[0]): f for f in fuzzer.findings}
    report = "\n\n".join(
        f"{f.operation} as {f.identity}, {f.data} data: {f.problem}\n{f.curl}" for f in distinct.values()
    )
    assert not fuzzer.findings, f"{len(fuzzer.findings)} findings, {len(distinct)} distinct:\n\n{report}"


def test_the_write_check_sees_committed_writes_and_only_those(tables: Tables) -> None:
    def run(sql: str) -> None:
        tables.loop.run_until_complete(tables.conn.execute(sql))

    before = tables.fingerprint()
    run("begin; update public.cities set name = name where slug = 'bangkok'; rollback")
    assert tables.fingerprint() == before  # rolled back: nothing written
    run("update public.cities set name = name where slug = 'bangkok'")  # the same value, but a new row version
    after = tables.fingerprint()
    assert {t for t in after if after[t] != before[t]} == {"public.cities"}
