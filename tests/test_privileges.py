"""What `anon` and `authenticated` may do in SQL, read from the catalog, on every database the suite
runs on (a bare Postgres grants nothing by default; the Supabase-shaped one grants everything in
`public`). Nothing here is maintained by hand except the expectations themselves, so a new table,
column or function that an API role can reach fails a test until it is listed here, with a reason.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
import pytest

API_ROLES = ("anon", "authenticated")
# Schemas holding the engine's own objects. LocalPlus's own tables (`businesses`, `partners`) and
# Supabase's (`auth`) are not the engine's to grant, so they are left out of the table checks.
ENGINE_SCHEMAS = ("public", "localplus", "localplus_private")
NOT_THE_ENGINES = {"public.businesses", "public.partners"}
ALL = "every column"

# SECURITY DEFINER functions an API role may execute, and why that is safe. Each is read-only
# (the test checks it is STABLE) and answers nothing about rows the caller may not see.
DEFINER_ALLOW_LIST: dict[str, str] = {
    "localplus_private.event_role_rank(uuid)": "the caller's own rank on an event, 0 for one they cannot see",
    "localplus_private.is_business_partner(uuid,text[])": "whether the caller is a partner of a business",
    "localplus_private.business_exists(uuid)": "whether a business of that id exists, nothing else about it "
    "(its own row-level security is not the engine's)",
    "localplus_private.event_accepts_registrations(uuid)": "registration is open on a published event the "
    "caller may see (private ones only with a tie)",
    "localplus_private.caller_saved(uuid)": "whether the caller saved an event",
    "localplus_private.event_registrations_per_day(uuid)": "per-day counts, empty unless the caller is a viewer",
    "localplus_private.listed_event_candidates(text[],text[],box,real)": "ids of published public events only "
    "(search uses the trigram indexes, which RLS would rule out)",
    "localplus_private.caller_viewer_events()": "ids of the events the caller is a viewer of or more: their "
    "own ties only (the analytics rollups' policy)",
    "localplus_private.tickets_held(uuid)": "how many tickets of a type unexpired reservations hold: public, "
    "like availability, and nothing about who holds them",
    "localplus_private.seats_blocked(uuid)": "how many seats of a seated type its editors blocked: public, like "
    "availability and like each seat's status",
    "localplus_private.tickets_sold(uuid)": "how many tickets of a type are sold (its buckets' count): public, "
    "like availability, and nothing about who bought them",
}

# Table privileges of each API role on each engine table: privilege -> ALL or the columns.
# Every column left out of INSERT and UPDATE is the server's (SERVER_OWNED below).
EVENT_INPUT = {
    "business_id", "title", "description", "category", "tags", "starts_at", "ends_at", "timezone",
    "venue_name", "address", "latitude", "longitude", "capacity", "visibility", "status",
    "registration_opens_at", "registration_closes_at", "city", "venue_id",
    "recurrence_rrule", "recurrence_exdates", "recurrence_rdates", "seating_plan_id",
}  # fmt: skip
TICKET_TYPE_INPUT = {
    "occurrence_id", "name", "description", "price_minor", "currency", "inventory", "min_per_order",
    "max_per_order", "sales_starts_at", "sales_ends_at", "hidden", "sort_order", "seat_category",
}  # fmt: skip
# Every column of an order but the payment secrets (client_secret, checkout_url).
ORDER_COLUMNS = {
    "id", "event_id", "occurrence_id", "buyer_id", "request_id", "status", "currency", "total_minor",
    "refunded_minor", "expires_at", "confirmation_code", "payment_intent_id", "checkout_session_id",
    "disputed_at", "paid_at", "created_at", "updated_at",
}  # fmt: skip
PROMOTION_INPUT = {
    "placements", "cities", "categories", "starts_at", "ends_at", "budget_minor", "currency", "bid_type", "bid_minor",
}  # fmt: skip
# Every column of a promotion but its payment's client secret.
PROMOTION_COLUMNS = PROMOTION_INPUT | {
    "id", "event_id", "business_id", "status", "reject_reason", "reserved_milli", "spent_milli", "payment_intent_id",
    "paid_minor", "refunded_minor", "refund_status", "stripe_refund_id", "closed_at", "created_by", "created_at",
    "updated_at",
}  # fmt: skip
VENUE_INPUT = {"city_id", "business_id", "name", "address", "latitude", "longitude"}
Grants = dict[str, str | set[str]]
EXPECTED_TABLE_PRIVILEGES: dict[str, dict[str, Grants]] = {
    "public.events": {
        "anon": {"SELECT": ALL},
        "authenticated": {
            "SELECT": ALL,
            "DELETE": ALL,
            "INSERT": EVENT_INPUT | {"created_by"},  # the policy holds it to the caller
            "UPDATE": EVENT_INPUT | {"status_reason"},  # kept unless the status changes (trigger)
        },
    },
    "public.event_participants": {
        "anon": {},
        "authenticated": {
            "SELECT": ALL,
            "DELETE": ALL,
            "INSERT": {"event_id", "user_id", "status", "guest_count", "occurrence_id"},
            "UPDATE": {"status", "guest_count", "occurrence_id"},
        },
    },
    "public.event_permissions": {
        "anon": {},
        "authenticated": {
            "SELECT": ALL,
            "DELETE": ALL,
            "INSERT": {"event_id", "user_id", "role", "expires_at"},
            "UPDATE": {"role", "expires_at"},
        },
    },
    "public.ticket_types": {
        "anon": {"SELECT": ALL},
        "authenticated": {
            "SELECT": ALL,
            "DELETE": ALL,
            "INSERT": TICKET_TYPE_INPUT | {"event_id"},
            "UPDATE": TICKET_TYPE_INPUT,
        },
    },
    "public.event_saves": {
        "anon": {},
        "authenticated": {"SELECT": ALL, "DELETE": ALL, "INSERT": {"user_id", "event_id"}},
    },
    # An event's figures are its viewers' (read by the stats use cases as the server); anyone may sort
    # a search by popularity.
    "public.event_counters": {
        "anon": {"SELECT": {"event_id", "popularity"}},
        "authenticated": {"SELECT": {"event_id", "popularity"}},
    },
    # Phase 3: occurrences are read with their event and written by the recurrence service alone;
    # what they were built from is the service's bookkeeping.
    "public.event_occurrences": {"anon": {"SELECT": ALL}, "authenticated": {"SELECT": ALL}},
    "public.event_series": {"anon": {}, "authenticated": {}},
    "public.event_moderation_log": {"anon": {}, "authenticated": {"SELECT": ALL}},
    "localplus.schema_migrations": {"anon": {}, "authenticated": {}},
    # Phase 2: only the server writes orders and tickets; buyers read theirs, editors their event's
    # (row-level security), and nobody but the buyer sees an order's payment secrets.
    "public.orders": {
        "anon": {},
        "authenticated": {
            "SELECT": ORDER_COLUMNS,
        },
    },
    "public.order_items": {"anon": {}, "authenticated": {"SELECT": ALL}},
    "public.tickets": {"anon": {}, "authenticated": {"SELECT": ALL}},
    "public.check_ins": {"anon": {}, "authenticated": {"SELECT": ALL}},
    "public.refunds": {"anon": {}, "authenticated": {"SELECT": ALL}},
    "public.ticket_holds": {"anon": {}, "authenticated": {}},
    # Rush scale: a ticket type's inventory in buckets, the server's alone.
    "public.ticket_type_buckets": {"anon": {}, "authenticated": {}},
    "public.stripe_events": {"anon": {}, "authenticated": {}},
    "public.stripe_refunds_awaiting_order": {"anon": {}, "authenticated": {}},
    "public.outbox": {"anon": {}, "authenticated": {}},
    # Phase 5: the notifications outbox is the server's (users read their own, admins all); users keep
    # their own preferences and read and remove their own push subscriptions, which the server writes.
    "public.notifications": {"anon": {}, "authenticated": {"SELECT": ALL}},
    "public.notification_settings": {
        "anon": {},
        "authenticated": {
            "SELECT": ALL,
            "DELETE": ALL,
            "INSERT": {"user_id", "kind", "channel", "enabled"},
            "UPDATE": {"enabled"},
        },
    },
    "public.push_subscriptions": {"anon": {}, "authenticated": {"SELECT": ALL, "DELETE": ALL}},
    # Phase 3: scraped items are the server's; platform admins read them (row-level security).
    "public.scraper_imports": {"anon": {}, "authenticated": {"SELECT": ALL}},
    # Phase 4: cities are the server's; venues are public, managed by admins and the business's partners.
    "public.cities": {"anon": {"SELECT": ALL}, "authenticated": {"SELECT": ALL}},
    "public.venues": {
        "anon": {"SELECT": ALL},
        "authenticated": {
            "SELECT": ALL,
            "DELETE": ALL,
            "INSERT": VENUE_INPUT,
            "UPDATE": VENUE_INPUT,
        },
    },
    # Phase 5: seating plans are public and written by the server for a venue's managers; an event's
    # seats are seen with the event; seat claims only within an order one may see (never who holds a
    # seat otherwise); nobody but the server writes any of them.
    "public.seating_plans": {"anon": {"SELECT": ALL}, "authenticated": {"SELECT": ALL}},
    "public.plan_seats": {"anon": {"SELECT": ALL}, "authenticated": {"SELECT": ALL}},
    "public.event_seats": {"anon": {"SELECT": ALL}, "authenticated": {"SELECT": ALL}},
    "public.seat_claims": {"anon": {}, "authenticated": {"SELECT": ALL}},
    # Phase 5 analytics: daily rollups the server's triggers and fold job write; partners read their events'
    # and businesses' rows, platform admins all (row-level security). Page views are the server's alone.
    "public.analytics_event_days": {"anon": {}, "authenticated": {"SELECT": ALL}},
    "public.analytics_business_days": {"anon": {}, "authenticated": {"SELECT": ALL}},
    "public.analytics_city_days": {"anon": {}, "authenticated": {"SELECT": ALL}},
    "public.event_views": {"anon": {}, "authenticated": {}},
    # Phase 5: promotions are read by their business's partners and admins (row-level security) and
    # written as drafts by owners and editors; status, spend, payment and refunds, the impressions,
    # clicks and the log are the server's.
    "public.promotions": {
        "anon": {},
        "authenticated": {
            "SELECT": PROMOTION_COLUMNS,
            "INSERT": PROMOTION_INPUT | {"event_id", "business_id", "created_by"},
            "UPDATE": PROMOTION_INPUT,
        },
    },
    "public.promotion_moderation_log": {"anon": {}, "authenticated": {"SELECT": ALL}},
    "public.promotion_impressions": {"anon": {}, "authenticated": {"SELECT": ALL}},
    # Who clicked (a user id, or a hash of an address an exhaustive guess reverses) is the server's alone.
    "public.promotion_clicks": {
        "anon": {},
        "authenticated": {"SELECT": {"promotion_id", "day", "spent_milli", "created_at"}},
    },
}
# Columns no API role may ever set or change (CONTRACT §3: status times, `source`, counters, `sold`).
SERVER_OWNED: dict[str, set[str]] = {
    "public.events": {
        "id", "created_at", "updated_at", "version", "source", "submitted_at", "published_at",
        "search_text", "search_keywords", "city_id", "category_key",
    },
    "public.venues": {"id", "created_by", "created_at", "updated_at"},
    "public.scraper_imports": {"status", "event_id", "duplicate_of", "score", "content_hash", "item"},
    "public.event_participants": {"created_at", "updated_at", "status_changed_at"},
    "public.event_permissions": {"granted_by", "created_at"},
    "public.ticket_types": {"id", "created_at", "updated_at"},
    "public.event_saves": {"created_at"},
    "public.event_occurrences": {
        "id", "event_id", "original_starts_at", "starts_at", "ends_at", "moved", "cancelled", "in_series",
        "status", "capacity", "note", "created_at", "updated_at",
    },
    "public.event_counters": {
        "event_id", "going", "interested", "waitlisted", "cancelled", "attended", "guests", "saves", "popularity",
        "checked_in",
    },
    "public.orders": {"status", "total_minor", "refunded_minor", "expires_at", "paid_at", "confirmation_code"},
    "public.ticket_holds": {"quantity", "expires_at"},
    "public.tickets": {"status", "code", "checked_in_at", "holder_id"},
    "public.refunds": {"status", "amount_minor", "payment_intent_id"},
    "public.check_ins": {"ticket_id", "result", "scanned_at", "offline"},
    "public.notifications": {"status", "attempts", "send_after", "sent_at", "last_error", "user_id", "payload"},
    "public.notification_settings": {"updated_at"},
    "public.push_subscriptions": {"user_id", "endpoint", "p256dh", "auth"},
    "public.promotions": {
        "id", "status", "reject_reason", "reserved_milli", "spent_milli", "payment_intent_id", "client_secret",
        "paid_minor", "refunded_minor", "refund_status", "stripe_refund_id", "closed_at", "created_at", "updated_at",
    },
}  # fmt: skip
TABLE_PRIVILEGES = ("SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE", "REFERENCES", "TRIGGER")

FUNCTIONS = """
select p.oid, n.nspname || '.' || p.proname || '(' || oidvectortypes(p.proargtypes) || ')' as signature,
       p.prosecdef as definer, p.provolatile::text as volatility, p.prorettype = 'trigger'::regtype as is_trigger,
       has_function_privilege('anon', p.oid, 'execute') as anon,
       has_function_privilege('authenticated', p.oid, 'execute') as authenticated
  from pg_proc p join pg_namespace n on n.oid = p.pronamespace
 where n.nspname = any($1) and p.prokind = 'f'
   -- an extension's own functions (pg_trgm lives in public on a bare Postgres)
   and not exists (select 1 from pg_depend d where d.classid = 'pg_proc'::regclass and d.objid = p.oid
                                                and d.deptype = 'e')
"""


@pytest.fixture(scope="module")
async def conn(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    connection = await asyncpg.connect(database_url)
    yield connection
    await connection.close()


def signature(text: str) -> str:
    return text.replace(", ", ",")


async def test_definer_functions_are_executable_only_where_allow_listed(conn: asyncpg.Connection) -> None:
    functions = await conn.fetch(FUNCTIONS, list(ENGINE_SCHEMAS))
    reachable = {signature(f["signature"]): f for f in functions if f["definer"] and (f["anon"] or f["authenticated"])}
    assert set(reachable) == set(DEFINER_ALLOW_LIST), "SECURITY DEFINER functions an API role may run"
    for name, function in reachable.items():
        assert function["volatility"] in ("s", "i"), f"{name} may write, yet an API role may run it"
    # None of them sits in `public`, which Supabase's REST exposes at /rest/v1/rpc/.
    assert not [f["signature"] for f in functions if f["definer"] and f["signature"].startswith("public.")]


async def test_api_roles_cannot_run_triggers_or_anything_that_writes(conn: asyncpg.Connection) -> None:
    functions = await conn.fetch(FUNCTIONS, list(ENGINE_SCHEMAS))
    offending = [
        f["signature"]
        for f in functions
        if (f["anon"] or f["authenticated"]) and (f["is_trigger"] or (f["definer"] and f["volatility"] == "v"))
    ]
    assert offending == []


async def actual_table_privileges(conn: asyncpg.Connection, table: str, role: str) -> Grants:
    grants: Grants = {}
    columns = [
        row["attname"]
        for row in await conn.fetch(
            "select attname from pg_attribute where attrelid = $1::regclass and attnum > 0 and not attisdropped",
            table,
        )
    ]
    for privilege in TABLE_PRIVILEGES:
        if await conn.fetchval("select has_table_privilege($1, $2, $3)", role, table, privilege):
            grants[privilege] = ALL
            continue
        if privilege in ("SELECT", "INSERT", "UPDATE", "REFERENCES"):
            granted = {
                column
                for column in columns
                if await conn.fetchval("select has_column_privilege($1, $2, $3, $4)", role, table, column, privilege)
            }
            if granted:
                grants[privilege] = granted
    return grants


async def engine_tables(conn: asyncpg.Connection) -> set[str]:
    rows = await conn.fetch(
        "select n.nspname || '.' || c.relname from pg_class c join pg_namespace n on n.oid = c.relnamespace "
        "where n.nspname = any($1) and c.relkind in ('r', 'p', 'v', 'm', 'f')"
        "  and not exists (select 1 from pg_depend d where d.classid = 'pg_class'::regclass and d.objid = c.oid"
        "                  and d.deptype = 'e')",
        list(ENGINE_SCHEMAS),
    )
    return {row[0] for row in rows} - NOT_THE_ENGINES


async def test_table_privileges_are_exactly_the_expected_ones(conn: asyncpg.Connection) -> None:
    assert await engine_tables(conn) == set(EXPECTED_TABLE_PRIVILEGES), "every engine table is listed here"
    wrong = []
    for table, by_role in EXPECTED_TABLE_PRIVILEGES.items():
        for role in API_ROLES:
            got = await actual_table_privileges(conn, table, role)
            if got != by_role[role]:
                wrong.append(f"{role} on {table}: expected {by_role[role]}, got {got}")
    assert not wrong, "\n".join(wrong)


async def test_no_api_role_can_write_a_server_owned_column(conn: asyncpg.Connection) -> None:
    writable = []
    for table, columns in SERVER_OWNED.items():
        for role in API_ROLES:
            grants = await actual_table_privileges(conn, table, role)
            for privilege in ("INSERT", "UPDATE"):
                granted = grants.get(privilege, set())
                hit = columns if granted == ALL else columns & set(granted)
                writable += [f"{role} may {privilege} {table}.{column}" for column in sorted(hit)]
    assert writable == []


async def test_no_api_role_may_use_an_engine_sequence_or_create_in_its_schemas(conn: asyncpg.Connection) -> None:
    sequences = await conn.fetch(
        "select n.nspname || '.' || c.relname as name from pg_class c join pg_namespace n on n.oid = c.relnamespace "
        "where n.nspname = any($1) and c.relkind = 'S'",
        list(ENGINE_SCHEMAS),
    )
    for sequence in sequences:
        for role in API_ROLES:
            for privilege in ("USAGE", "SELECT", "UPDATE"):
                assert not await conn.fetchval(
                    "select has_sequence_privilege($1, $2, $3)", role, sequence["name"], privilege
                ), (role, privilege, sequence["name"])
    for role in API_ROLES:
        for schema in ("localplus", "localplus_private"):
            assert not await conn.fetchval("select has_schema_privilege($1, $2, 'CREATE')", role, schema)
        assert not await conn.fetchval("select has_schema_privilege($1, 'localplus', 'USAGE')", role)


async def test_new_private_functions_and_tables_start_with_no_grants(conn: asyncpg.Connection) -> None:
    """The default privileges of the role that runs migrations: what a new object gets before any
    migration says otherwise (checked on objects made and dropped in a rolled-back transaction)."""
    transaction = conn.transaction()
    await transaction.start()
    try:
        await conn.execute(
            "create function localplus_private.probe() returns int language sql security definer as 'select 1';"
            "create table localplus_private.probe (id int)"
        )
        for role in API_ROLES:
            assert not await conn.fetchval("select has_table_privilege($1, 'localplus_private.probe', 'SELECT')", role)
            assert not await conn.fetchval(
                "select has_function_privilege($1, 'localplus_private.probe()', 'EXECUTE')", role
            )
        # PUBLIC (grantee 0) holds EXECUTE on a function unless someone took it away.
        executors = await conn.fetch(
            "select a.grantee from pg_proc p, aclexplode(coalesce(p.proacl, acldefault('f', p.proowner))) a "
            "where p.oid = 'localplus_private.probe()'::regprocedure and a.privilege_type = 'EXECUTE'"
        )
        assert 0 not in {row["grantee"] for row in executors}
    finally:
        await transaction.rollback()


async def test_no_api_role_may_run_a_function_that_takes_the_request_context(conn: asyncpg.Connection) -> None:
    """Database.read's functions set the caller they are given (localplus_private.become): whoever may
    run one may read as anybody, so only the services' login role, their owner, may."""
    takers = await conn.fetch(
        "select p.oid::regprocedure::text as signature, has_function_privilege('anon', p.oid, 'execute') as anon,"
        "       has_function_privilege('authenticated', p.oid, 'execute') as authenticated,"
        "       has_function_privilege('service_role', p.oid, 'execute') as service_role"
        "  from pg_proc p where p.proargnames[1:2] = array['p_role', 'p_claims']"
    )
    assert {
        "localplus_private.become(text,text,text,text)",
        "localplus_private.read_event(text,text,text,text,uuid)",
    } <= {signature(t["signature"]) for t in takers}
    assert [t["signature"] for t in takers if t["anon"] or t["authenticated"] or t["service_role"]] == []
