-- A request's read in one round trip (localplus_common.db.Database.read): instead of BEGIN plus the
-- request context, the query, then COMMIT (three round trips), one statement runs outside a
-- transaction block, as its own implicit transaction, and calls a plain (not SECURITY DEFINER)
-- plpgsql function that sets the caller first and then reads. Row-level security still holds: a
-- plpgsql statement is planned when it first runs, after the role is set, and a cached plan that
-- row-level security shaped is planned again when a later call runs as another role. Putting the
-- context in the same statement as the read (a CTE, say) would not do: that statement is planned as
-- whoever the session is before it runs.
--
-- Callable only by the services' own login role (the functions' owner): with any claims it liked, a
-- caller of these could read as anybody. They name every object with its schema and carry no
-- `set search_path`: a SET clause costs a save and restore of settings on every call.

-- The request context, every setting transaction-local, as localplus_common.db.request_context sets it.
create or replace function localplus_private.become(
  p_role text, p_claims text, p_event_id text, p_request_id text
) returns void
  language plpgsql volatile
  as $$
  begin
    perform set_config('role', p_role, true),
            set_config('request.jwt.claims', p_claims, true),
            set_config('localplus.event_id', p_event_id, true),
            set_config('localplus.request_id', p_request_id, true);
  end
  $$;

-- GetEvent: the event as the caller may see it, with the caller's rank on it (none when invisible).
create or replace function localplus_private.read_event(
  p_role text, p_claims text, p_event_id text, p_request_id text, p_id uuid
) returns table (event public.events, caller_rank integer)
  language plpgsql volatile
  as $$
  begin
    perform localplus_private.become(p_role, p_claims, p_event_id, p_request_id);
    return query
      select e, localplus_private.event_role_rank(e.id) from public.events e where e.id = p_id;
  end
  $$;

revoke all on function localplus_private.become(text, text, text, text) from public, anon, authenticated, service_role;
revoke all on function localplus_private.read_event(text, text, text, text, uuid)
  from public, anon, authenticated, service_role;
