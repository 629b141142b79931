-- Hardening: what anyone who reaches the database the way Supabase's REST does (as `anon` or
-- `authenticated`, through /rest/v1/ and /rest/v1/rpc/) may do, made explicit whatever the
-- database's defaults are. A bare Postgres grants nothing on new tables and EXECUTE on new functions
-- to PUBLIC; Supabase also grants every table, sequence and function created in `public` to `anon`
-- and `authenticated` in full (CONTRACT §8). After this migration, on either:
--
-- * SECURITY DEFINER functions live in `localplus_private`, which the REST API does not expose.
--   EXECUTE is revoked from every API role and granted back only on the read helpers that policies,
--   triggers running as the caller and the services' own queries call; those reveal nothing about
--   rows the caller cannot see. Functions that write (counters, waitlist promotion) run only
--   inside triggers. Only three pure helpers stay in `public` (time zone and tag checks, distance).
-- * Each API role holds exactly the table and column privileges its policies need. Columns the
--   server owns (times, version, counters, `source`, status bookkeeping, `sold`) are in no grant,
--   and the before-write triggers set them whatever a statement says.
-- * Unlisted events are readable by id through the API, which names the id it was given in
--   `localplus.event_id`, but can no longer be listed in SQL by people without a role on them.
-- * The waitlist is strictly first come, first served: nobody takes a place while someone who
--   asked earlier is still waiting.
-- * A cancelled event stays public only if it was cancelled while published: `published_at` is
--   cleared whenever an event goes back to review, and cancelled events are frozen.
--
-- Objects that are not the engine's (LocalPlus's own `businesses` and `partners`, `auth`) keep
-- their privileges. This file is safe to run again: it recreates what it defines.

create schema if not exists localplus_private;
revoke all on schema localplus_private from public;
grant usage on schema localplus_private to anon, authenticated, service_role;

-- New functions of the migrating role are not executable by PUBLIC until a migration grants them.
-- (Postgres cannot narrow this to one schema: per-schema default privileges only add to the global
-- ones.) Supabase's own grants to the API roles on new functions in `public` are left as they are,
-- so the engine never creates definer functions there.
alter default privileges revoke execute on functions from public;

-- Data written before this migration: events sent back to review (or cancelled from there) still
-- carried the `published_at` of their reviewed text, which kept a cancelled event public.
update public.events e set published_at = null
 where e.published_at is not null
   and (e.status in ('draft', 'pending_review', 'rejected')
        or (e.status = 'cancelled'
            and (select l.from_status from public.event_moderation_log l
                  where l.event_id = e.id and l.to_status = 'cancelled'
                  order by l.id desc limit 1) is distinct from 'published'));

-- Authorization helpers (read-only). SECURITY DEFINER where a policy must consult other tables
-- without recursing through their policies; search_path pinned so callers cannot shadow tables.

create or replace function localplus_private.is_platform_admin() returns boolean
  language sql stable
  set search_path = ''
  as $$
    select coalesce((select auth.jwt()) -> 'app_metadata' ->> 'role' = 'admin', false)
        or coalesce((select auth.role()) = 'service_role', false)
  $$;

-- Whether the statement comes from a request (this API or Supabase's REST, both of which switch
-- into an API role) rather than from a trusted backend connection such as a migration. Read from
-- the `role` setting, which SECURITY DEFINER functions leave alone, so triggers of both kinds agree.
create or replace function localplus_private.in_request() returns boolean
  language sql stable
  set search_path = ''
  as $$
    select current_setting('role') in ('anon', 'authenticated', 'service_role')
  $$;

-- Platform admins, service_role and trusted backend connections (no request claims at all, e.g.
-- migrations) may make any change.
create or replace function localplus_private.is_privileged() returns boolean
  language sql stable
  set search_path = ''
  as $$
    select localplus_private.is_platform_admin()
        or (not localplus_private.in_request() and (select auth.role()) is null)
  $$;

-- Whether the caller is a partner of a business in one of these roles (only the caller's own ties).
create or replace function localplus_private.is_business_partner(p_business_id uuid, p_roles text[]) returns boolean
  language sql stable security definer
  set search_path = ''
  as $$
    select exists (
      select 1 from public.partners p
      where p.business_id = p_business_id and p.user_id = (select auth.uid()) and p.role = any (p_roles)
    )
  $$;

-- The caller's rank on an event: 4 owner (also platform admins), 3 editor, 2 viewer,
-- 1 participant, 0 nothing (also for events that do not exist). The highest of creator, business
-- partner, explicit permission and registration wins (CONTRACT §3).
create or replace function localplus_private.event_role_rank(p_event_id uuid) returns integer
  language sql stable security definer
  set search_path = ''
  as $$
    select case when localplus_private.is_platform_admin() then 4 else coalesce(greatest(
      (select 4 from public.events e
        where e.id = p_event_id and e.created_by = (select auth.uid())),
      (select max(case p.role when 'owner' then 4 when 'editor' then 3 else 2 end)
         from public.events e join public.partners p on p.business_id = e.business_id
        where e.id = p_event_id and p.user_id = (select auth.uid())),
      (select max(case ep.role when 'owner' then 4 when 'editor' then 3 else 2 end)
         from public.event_permissions ep
        where ep.event_id = p_event_id and ep.user_id = (select auth.uid())
          and (ep.expires_at is null or ep.expires_at > now())),
      (select 1 from public.event_participants pa
        where pa.event_id = p_event_id and pa.user_id = (select auth.uid()) and pa.status <> 'cancelled')
    ), 0) end
  $$;

-- Self-registration is open only on published events the caller can see, inside the window.
create or replace function localplus_private.event_accepts_registrations(p_event_id uuid) returns boolean
  language sql stable security definer
  set search_path = ''
  as $$
    select exists (
      select 1 from public.events e
      where e.id = p_event_id
        and e.status = 'published'
        and (e.visibility <> 'private' or localplus_private.event_role_rank(e.id) >= 1)
        and (e.registration_opens_at is null or e.registration_opens_at <= now())
        and coalesce(e.registration_closes_at, e.ends_at) > now()
    )
  $$;

-- Whether the caller may see an event, by the events policy itself (SECURITY INVOKER). The SET
-- clause keeps Postgres from inlining it, so it is checked per row by primary key.
create or replace function localplus_private.event_is_visible(p_event_id uuid) returns boolean
  language sql stable
  set search_path = ''
  as $$
    select exists (select 1 from public.events e where e.id = p_event_id)
  $$;

-- Edits to what reviewers vetted send a published event back to review; logistics
-- (times, capacity, registration window) do not.
create or replace function localplus_private.event_needs_review(old_event public.events, new_event public.events)
  returns boolean
  language sql immutable
  set search_path = ''
  as $$
    select (old_event.title, old_event.description, old_event.category, old_event.tags,
            old_event.venue_name, old_event.address, old_event.latitude, old_event.longitude,
            old_event.city, old_event.business_id, old_event.visibility)
           is distinct from
           (new_event.title, new_event.description, new_event.category, new_event.tags,
            new_event.venue_name, new_event.address, new_event.latitude, new_event.longitude,
            new_event.city, new_event.business_id, new_event.visibility)
  $$;

-- Whether the caller saved an event (only the caller's own saves). SECURITY DEFINER because the
-- events policy asks it, and the saves policy asks the events one: inline, that is a cycle.
create or replace function localplus_private.caller_saved(p_event_id uuid) returns boolean
  language sql stable security definer
  set search_path = ''
  as $$
    select exists (select 1 from public.event_saves s where s.user_id = (select auth.uid()) and s.event_id = p_event_id)
  $$;

-- Registrations per day in the event's time zone, for its viewers and up (who may not read the
-- individual registrations themselves); nothing for anyone else.
create or replace function localplus_private.event_registrations_per_day(p_event_id uuid)
  returns table (day date, registrations integer)
  language sql stable security definer
  set search_path = ''
  as $$
    select (p.created_at at time zone e.timezone)::date, count(*)::integer
      from public.event_participants p join public.events e on e.id = p.event_id
     where p.event_id = p_event_id and localplus_private.event_role_rank(p_event_id) >= 2
     group by 1
     order by 1
  $$;

-- Search candidates. pg_trgm's operators (and the geometric ones) are not LEAKPROOF, so under
-- row-level security Postgres may not use them as index conditions ahead of the policies, and a
-- search would read every row. This function finds the candidates with the indexes instead. It
-- bypasses RLS, but only ever returns published public events, which every policy lets anyone
-- read; the caller's query still runs under RLS. Each word must appear as is anywhere
-- (`p_patterns`, LIKE patterns; this also finds a Thai word inside a run of text without spaces)
-- or match the keywords approximately (trigram word similarity: typos, partial words).
create or replace function localplus_private.listed_event_candidates(p_words text[], p_patterns text[], p_box box,
                                                                     p_threshold real)
  returns setof uuid
  language plpgsql stable security definer
  -- pg_trgm lives in `extensions` on Supabase and in `public` on a plain Postgres.
  set search_path = pg_catalog, public, extensions
  as $$
declare
  v_words text := '';
begin
  perform set_config('pg_trgm.word_similarity_threshold', p_threshold::text, true);
  for i in 1 .. coalesce(array_length(p_words, 1), 0) loop
    -- LIKE first: it is much cheaper to check than word similarity, and usually decides.
    v_words := v_words || format(' and (e.search_text like $3[%s] or e.search_keywords %%> $1[%s])', i, i);
  end loop;
  if v_words = '' then
    return query
      select e.id from public.events e
       where e.status = 'published' and e.visibility = 'public'
         and e.latitude is not null and point(e.longitude, e.latitude) <@ p_box;
    return;
  end if;
  -- Text first, then the area: Postgres cannot estimate `<@ box` and would otherwise scan the
  -- whole area and test the (costly) trigram match on every event in it.
  return query execute
    'with matches as materialized ('
    || ' select e.id, e.latitude, e.longitude from public.events e'
    || ' where e.status = ''published'' and e.visibility = ''public''' || v_words || ')'
    || ' select id from matches'
    || ' where $2 is null or (latitude is not null and point(longitude, latitude) <@ $2)'
    using p_words, p_box, p_patterns;
end
$$;

-- Events: one before-write trigger owns every column the server decides.

-- Requests never set the server's columns; trusted backend connections (migrations, maintenance)
-- may, e.g. to import history.
create or replace function localplus_private.events_before_write() returns trigger
  language plpgsql
  set search_path = ''
  as $$
declare
  v_privileged boolean := localplus_private.is_privileged();
  v_request boolean := localplus_private.in_request();
  v_old_status text := case when tg_op = 'UPDATE' then old.status end;
begin
  if tg_op = 'INSERT' then
    new.version := 1;
    if v_request then
      new.created_at := now();
      new.submitted_at := null;
      new.published_at := null;
    end if;
  else
    new.id := old.id;
    new.created_by := old.created_by;
    new.version := old.version + 1;
    if v_request then
      new.created_at := old.created_at;
      new.submitted_at := old.submitted_at;
      new.published_at := old.published_at;
    end if;
    if not v_privileged then
      new.source := old.source;
      if old.status = 'cancelled' then
        raise exception 'a cancelled event can no longer be changed'
          using errcode = 'P0001', hint = 'INVALID_STATE';
      end if;
      -- Moving an event to another business takes owner/editor rights there.
      if new.business_id is distinct from old.business_id and new.business_id is not null
         and not localplus_private.is_business_partner(new.business_id, array['owner', 'editor']) then
        raise exception 'only owner or editor partners of a business may move events to it'
          using errcode = 'insufficient_privilege';
      end if;
    end if;
  end if;
  new.updated_at := now();
  new.search_keywords := lower(concat_ws(' ', new.title, new.category, array_to_string(new.tags, ' '),
                                         new.venue_name, new.city));
  new.search_text := concat_ws(' ', new.search_keywords, lower(left(new.description, 2000)));
  if tg_op = 'UPDATE' and not v_privileged and old.status = 'published' and new.status = 'published'
     and localplus_private.event_needs_review(old, new) then
    new.status := 'pending_review';
  end if;
  if new.status is not distinct from v_old_status then
    new.status_reason := old.status_reason;
    return new;
  end if;
  -- A status change: check it is allowed for this caller.
  if not v_privileged then
    if new.status = 'published' then
      raise exception 'only platform admins publish events; submit it for review instead'
        using errcode = 'insufficient_privilege';
    end if;
    if new.status = 'rejected' then
      raise exception 'only platform admins reject events' using errcode = 'insufficient_privilege';
    end if;
    if not (
      (v_old_status is null and new.status in ('draft', 'pending_review'))
      or (v_old_status in ('draft', 'rejected') and new.status = 'pending_review')
      or (v_old_status = 'published' and new.status = 'pending_review')
      or (v_old_status = 'pending_review' and new.status = 'draft')
      or (v_old_status <> 'cancelled' and new.status = 'cancelled'
          and localplus_private.event_role_rank(new.id) >= 4)
    ) then
      raise exception 'an event cannot go from % to % this way', coalesce(v_old_status, 'nothing'), new.status
        using errcode = 'P0001', hint = 'INVALID_STATE';
    end if;
  end if;
  if new.status = 'rejected' and coalesce(btrim(new.status_reason), '') = '' then
    raise exception 'a rejection needs a reason' using errcode = 'check_violation',
      constraint = 'events_status_reason_check';
  end if;
  if new.status not in ('rejected', 'cancelled')
     or (tg_op = 'UPDATE' and new.status_reason is not distinct from old.status_reason) then
    new.status_reason := null;
  end if;
  if new.status = 'pending_review' then
    new.submitted_at := now();
  end if;
  -- published_at vouches for the text as reviewed: set on publishing, gone once the event is back
  -- in review (or a draft), kept on cancelling a published event so that it stays readable.
  if new.status = 'published' then
    new.published_at := coalesce(new.published_at, now());
  elsif new.status in ('draft', 'pending_review', 'rejected') then
    new.published_at := null;
  end if;
  return new;
end
$$;

drop trigger if exists events_before_update on public.events;
drop trigger if exists events_before_write on public.events;
create trigger events_before_write before insert or update on public.events
  for each row execute function localplus_private.events_before_write();

create or replace function localplus_private.events_log_status_change() returns trigger
  language plpgsql security definer
  set search_path = ''
  as $$
begin
  if tg_op = 'UPDATE' and new.status is not distinct from old.status then
    return null;
  end if;
  insert into public.event_moderation_log (event_id, actor_id, from_status, to_status, reason)
  values (new.id, (select auth.uid()), case when tg_op = 'UPDATE' then old.status end, new.status,
          new.status_reason);
  return null;
end
$$;

drop trigger if exists events_log_status_change on public.events;
create trigger events_log_status_change after insert or update of status on public.events
  for each row execute function localplus_private.events_log_status_change();

-- Every event gets its counters row when it is created, so the counting triggers only ever
-- update (a cascade delete of an event must not try to recreate the row).
create or replace function localplus_private.events_create_counters() returns trigger
  language plpgsql security definer
  set search_path = ''
  as $$
begin
  insert into public.event_counters (event_id) values (new.id) on conflict (event_id) do nothing;
  return null;
end
$$;

drop trigger if exists events_create_counters on public.events;
create trigger events_create_counters after insert on public.events
  for each row execute function localplus_private.events_create_counters();

-- Capacity. Seats are handed out under a lock on the event row, so concurrent registrations
-- queue up and the headcount of people going or checked in ("attended", guests included) never
-- passes capacity, whether the write comes through this API or straight through Supabase's REST.

-- Places taken at an event, from the trigger-kept counters. Callers hold the event's row lock.
create or replace function localplus_private.event_seats_taken(p_event_id uuid) returns integer
  language sql stable security definer
  set search_path = ''
  as $$
    select coalesce((select going + attended + guests from public.event_counters where event_id = p_event_id), 0)
  $$;

-- Strictly first come, first served: people are let in from the head of the waitlist, in the order
-- they joined it, until the next one does not fit (a party is never split, and nobody behind it
-- overtakes it).
create or replace function localplus_private.promote_waitlist(p_event_id uuid) returns integer
  language plpgsql security definer
  set search_path = ''
  as $$
declare
  v_capacity integer;
  v_taken integer;
  v_promoted integer := 0;
  v_next record;
begin
  select capacity into v_capacity from public.events where id = p_event_id for update;
  if not found then
    return 0;  -- the event is being deleted
  end if;
  v_taken := localplus_private.event_seats_taken(p_event_id);
  for v_next in
    select user_id, guest_count from public.event_participants
     where event_id = p_event_id and status = 'waitlisted'
     order by status_changed_at, user_id
  loop
    exit when v_capacity is not null and v_taken + 1 + v_next.guest_count > v_capacity;
    update public.event_participants set status = 'going'
     where event_id = p_event_id and user_id = v_next.user_id;
    v_taken := v_taken + 1 + v_next.guest_count;
    v_promoted := v_promoted + 1;
  end loop;
  return v_promoted;
end
$$;

create or replace function localplus_private.event_participants_before_write() returns trigger
  language plpgsql security definer
  set search_path = ''
  as $$
declare
  v_capacity integer;
  v_taken integer;
  v_waiting boolean;
begin
  -- A request's timestamps are the server's, whatever it says: status_changed_at orders the waitlist.
  if tg_op = 'INSERT' then
    if localplus_private.in_request() then
      new.created_at := now();
      new.status_changed_at := clock_timestamp();
    end if;
  else
    new.event_id := old.event_id;
    new.user_id := old.user_id;
    if localplus_private.in_request() then
      new.created_at := old.created_at;
      new.status_changed_at := old.status_changed_at;
    end if;
    if new.status is distinct from old.status and new.status_changed_at is not distinct from old.status_changed_at then
      new.status_changed_at := clock_timestamp();
    end if;
  end if;
  new.updated_at := now();
  -- Only asking for a place, or for more places, needs a free one.
  if new.status <> 'going'
     or (tg_op = 'UPDATE' and old.status = 'going' and new.guest_count <= old.guest_count) then
    return new;
  end if;
  select capacity into v_capacity from public.events where id = new.event_id for update;
  if v_capacity is null then
    return new;
  end if;
  -- Someone who asked earlier is still waiting: a row already on the waitlist waits behind the ones
  -- ahead of it, anyone else behind all of them.
  select exists (
    select 1 from public.event_participants w
     where w.event_id = new.event_id and w.status = 'waitlisted' and w.user_id <> new.user_id
       and (tg_op = 'INSERT' or old.status <> 'waitlisted'
            or (w.status_changed_at, w.user_id) < (old.status_changed_at, old.user_id))
  ) into v_waiting;
  -- Everyone else's places: this row's old version is counted in the total.
  v_taken := localplus_private.event_seats_taken(new.event_id)
             - case when tg_op = 'UPDATE' and old.status in ('going', 'attended') then 1 + old.guest_count else 0 end;
  if v_waiting or v_taken + 1 + new.guest_count > v_capacity then
    if tg_op = 'UPDATE' and old.status = 'going' then
      raise exception '%', case when v_waiting then 'others are waiting for places; no guests can be added now'
                                else format('not enough capacity left for %s guests', new.guest_count) end
        using errcode = 'P0001', hint = 'CAPACITY_EXCEEDED';
    end if;
    new.status := 'waitlisted';
    -- Asking again keeps one's place in the queue.
    new.status_changed_at := case when tg_op = 'UPDATE' and old.status = 'waitlisted' then old.status_changed_at
                                  else clock_timestamp() end;
  end if;
  return new;
end
$$;

-- A place given up (no longer going, or fewer guests) can let someone in, and so can the head of
-- the queue leaving it or asking for fewer places. Checking in ("attended") keeps the place, and a
-- promotion itself (waitlisted to going) needs no further one: promote_waitlist goes on by itself.
create or replace function localplus_private.event_participants_after_write() returns trigger
  language plpgsql security definer
  set search_path = ''
  as $$
begin
  if (old.status = 'going'
      and (tg_op = 'DELETE' or new.status not in ('going', 'attended') or new.guest_count < old.guest_count))
     or (old.status = 'waitlisted'
         and (tg_op = 'DELETE' or new.status not in ('waitlisted', 'going') or new.guest_count < old.guest_count)) then
    perform localplus_private.promote_waitlist(old.event_id);
  end if;
  return null;
end
$$;

create or replace function localplus_private.bump_counter(p_event_id uuid, p_status text, p_delta integer,
                                                          p_guests integer)
  returns void
  language plpgsql security definer
  set search_path = ''
  as $$
begin
  update public.event_counters set
    going = going + case when p_status = 'going' then p_delta else 0 end,
    interested = interested + case when p_status = 'interested' then p_delta else 0 end,
    waitlisted = waitlisted + case when p_status = 'waitlisted' then p_delta else 0 end,
    cancelled = cancelled + case when p_status = 'cancelled' then p_delta else 0 end,
    attended = attended + case when p_status = 'attended' then p_delta else 0 end,
    guests = guests + case when p_status in ('going', 'attended') then p_delta * p_guests else 0 end
  where event_id = p_event_id;
end
$$;

create or replace function localplus_private.event_participants_count() returns trigger
  language plpgsql security definer
  set search_path = ''
  as $$
begin
  if tg_op in ('UPDATE', 'DELETE') then
    perform localplus_private.bump_counter(old.event_id, old.status, -1, old.guest_count);
  end if;
  if tg_op in ('INSERT', 'UPDATE') then
    perform localplus_private.bump_counter(new.event_id, new.status, 1, new.guest_count);
  end if;
  return null;
end
$$;

drop trigger if exists event_participants_before_write on public.event_participants;
create trigger event_participants_before_write before insert or update on public.event_participants
  for each row execute function localplus_private.event_participants_before_write();

-- Triggers fire in name order: the counts must be current before the waitlist is promoted.
drop trigger if exists event_participants_count on public.event_participants;
create trigger event_participants_count after insert or update or delete on public.event_participants
  for each row execute function localplus_private.event_participants_count();

drop trigger if exists event_participants_after_write on public.event_participants;
drop trigger if exists event_participants_promote_waitlist on public.event_participants;
create trigger event_participants_promote_waitlist after update or delete on public.event_participants
  for each row execute function localplus_private.event_participants_after_write();

create or replace function localplus_private.events_after_capacity_change() returns trigger
  language plpgsql security definer
  set search_path = ''
  as $$
begin
  if new.capacity is null or new.capacity > old.capacity then
    perform localplus_private.promote_waitlist(new.id);
  end if;
  return null;
end
$$;

drop trigger if exists events_after_capacity_change on public.events;
create trigger events_after_capacity_change after update of capacity on public.events
  for each row when (new.capacity is distinct from old.capacity)
  execute function localplus_private.events_after_capacity_change();

-- Permissions: who granted a role, and when, is recorded by the server.
create or replace function localplus_private.event_permissions_before_write() returns trigger
  language plpgsql
  set search_path = ''
  as $$
begin
  if tg_op = 'UPDATE' then
    new.event_id := old.event_id;
    new.user_id := old.user_id;
  end if;
  if localplus_private.in_request() then
    new.created_at := case when tg_op = 'INSERT' then now() else old.created_at end;
    new.granted_by := (select auth.uid());
  end if;
  return new;
end
$$;

drop trigger if exists event_permissions_before_write on public.event_permissions;
create trigger event_permissions_before_write before insert or update on public.event_permissions
  for each row execute function localplus_private.event_permissions_before_write();

-- Saves keep the moment they were made.
create or replace function localplus_private.event_saves_before_write() returns trigger
  language plpgsql
  set search_path = ''
  as $$
begin
  if localplus_private.in_request() then
    new.created_at := case when tg_op = 'INSERT' then now() else old.created_at end;
  end if;
  return new;
end
$$;

drop trigger if exists event_saves_before_write on public.event_saves;
create trigger event_saves_before_write before insert or update on public.event_saves
  for each row execute function localplus_private.event_saves_before_write();

create or replace function localplus_private.event_saves_count() returns trigger
  language plpgsql security definer
  set search_path = ''
  as $$
declare
  v_event uuid := case when tg_op = 'DELETE' then old.event_id else new.event_id end;
begin
  update public.event_counters set saves = saves + case when tg_op = 'DELETE' then -1 else 1 end
   where event_id = v_event;
  return null;
end
$$;

drop trigger if exists event_saves_count on public.event_saves;
create trigger event_saves_count after insert or delete on public.event_saves
  for each row execute function localplus_private.event_saves_count();

-- Ticket types: `sold` is the server's (Phase 2 computes it from orders); times are kept here.
create or replace function localplus_private.ticket_types_before_write() returns trigger
  language plpgsql
  set search_path = ''
  as $$
begin
  if tg_op = 'UPDATE' then
    new.id := old.id;
    new.event_id := old.event_id;
  end if;
  if localplus_private.in_request() then
    new.created_at := case when tg_op = 'INSERT' then now() else old.created_at end;
    new.sold := case when tg_op = 'INSERT' then 0 else old.sold end;
  end if;
  new.updated_at := now();
  return new;
end
$$;

drop trigger if exists ticket_types_before_write on public.ticket_types;
create trigger ticket_types_before_write before insert or update on public.ticket_types
  for each row execute function localplus_private.ticket_types_before_write();

create or replace function localplus_private.refuse_change() returns trigger
  language plpgsql
  set search_path = ''
  as $$
begin
  raise exception '% is append-only', tg_table_name using errcode = 'insufficient_privilege';
end
$$;

drop trigger if exists event_moderation_log_append_only on public.event_moderation_log;
create trigger event_moderation_log_append_only before update or delete on public.event_moderation_log
  for each row execute function localplus_private.refuse_change();

-- Times the API and Postgres agree on: Postgres would store year 1 or 9999-12-31 from a client as
-- ±infinity. NOT VALID first, then validated when existing rows allow, so a populated database
-- keeps its rows (a row out of range only stops the validation, and is listed by it).
do $$
declare
  v_check record;
begin
  for v_check in
    select * from (values
      ('public.events'::regclass, 'events_times_in_range',
       'starts_at, ends_at, registration_opens_at, registration_closes_at'),
      ('public.ticket_types'::regclass, 'ticket_types_times_in_range', 'sales_starts_at, sales_ends_at'),
      ('public.event_permissions'::regclass, 'event_permissions_times_in_range', 'expires_at')
    ) as c (table_name, constraint_name, columns)
  loop
    if not exists (select 1 from pg_catalog.pg_constraint
                    where conrelid = v_check.table_name and conname = v_check.constraint_name) then
      execute format('alter table %s add constraint %I check (%s) not valid', v_check.table_name,
                     v_check.constraint_name,
                     (select string_agg(format('(%1$I is null or (%1$I >= %2$L and %1$I < %3$L))', btrim(col),
                                               '1900-01-01 00:00:00+00', '2200-01-01 00:00:00+00'), ' and ')
                        from unnest(string_to_array(v_check.columns, ',')) as col));
    end if;
    begin
      execute format('alter table %s validate constraint %I', v_check.table_name, v_check.constraint_name);
    exception when check_violation then
      raise warning '% has rows outside 1900-2200; new writes are checked, old rows stay until fixed',
        v_check.table_name;
    end;
  end loop;
end
$$;

-- Row-level security: the single source of truth for who may do what (CONTRACT §3), restated on
-- the private helpers.

-- Readable by anyone: published public events, and cancelled ones that were cancelled while
-- published. Unlisted ones only by their id: the API puts the id it was asked for in
-- `localplus.event_id` for the request, so `select ... where visibility = 'unlisted'` lists none.
drop policy if exists events_read on public.events;
create policy events_read on public.events for select to anon, authenticated
  using ((visibility <> 'private'
          and (status = 'published' or (status = 'cancelled' and published_at is not null))
          and (visibility = 'public' or id = (select nullif(current_setting('localplus.event_id', true), '')::uuid)))
         -- Checked on the row itself as well: INSERT ... RETURNING must see the new row, which
         -- event_role_rank() (reading the statement's snapshot) cannot yet.
         or created_by = (select auth.uid())
         or localplus_private.event_role_rank(id) >= 1);

-- Who saved an unlisted event keeps seeing it among their saves.
drop policy if exists events_read_saved on public.events;
create policy events_read_saved on public.events for select to authenticated
  using (visibility = 'unlisted'
         and (status = 'published' or (status = 'cancelled' and published_at is not null))
         and localplus_private.caller_saved(id));

drop policy if exists events_create on public.events;
create policy events_create on public.events for insert to authenticated
  with check (
    localplus_private.is_platform_admin()
    or (created_by = (select auth.uid())
        and (business_id is null or localplus_private.is_business_partner(business_id, array['owner', 'editor'])))
  );

-- Moving an event to another business is checked by events_before_write (it needs the old row).
drop policy if exists events_update on public.events;
create policy events_update on public.events for update to authenticated
  using (localplus_private.event_role_rank(id) >= 3)
  with check (localplus_private.event_role_rank(id) >= 3);

drop policy if exists events_delete on public.events;
create policy events_delete on public.events for delete to authenticated
  using (localplus_private.event_role_rank(id) >= 4);

drop policy if exists event_participants_read on public.event_participants;
create policy event_participants_read on public.event_participants for select to authenticated
  using (user_id = (select auth.uid()) or localplus_private.event_role_rank(event_id) >= 3);

drop policy if exists event_participants_create on public.event_participants;
create policy event_participants_create on public.event_participants for insert to authenticated
  with check (
    localplus_private.event_role_rank(event_id) >= 3
    or (user_id = (select auth.uid()) and status in ('going', 'interested', 'waitlisted')
        and localplus_private.event_accepts_registrations(event_id))
  );

drop policy if exists event_participants_update on public.event_participants;
create policy event_participants_update on public.event_participants for update to authenticated
  using (user_id = (select auth.uid()) or localplus_private.event_role_rank(event_id) >= 3)
  with check (
    localplus_private.event_role_rank(event_id) >= 3
    or (user_id = (select auth.uid())
        and (status = 'cancelled'
             or (status in ('going', 'interested', 'waitlisted')
                 and localplus_private.event_accepts_registrations(event_id))))
  );

drop policy if exists event_participants_delete on public.event_participants;
create policy event_participants_delete on public.event_participants for delete to authenticated
  using (user_id = (select auth.uid()) or localplus_private.event_role_rank(event_id) >= 3);

drop policy if exists event_permissions_read on public.event_permissions;
create policy event_permissions_read on public.event_permissions for select to authenticated
  using (user_id = (select auth.uid()) or localplus_private.event_role_rank(event_id) >= 3);

drop policy if exists event_permissions_manage on public.event_permissions;
create policy event_permissions_manage on public.event_permissions for all to authenticated
  using (localplus_private.event_role_rank(event_id) >= 4)
  with check (localplus_private.event_role_rank(event_id) >= 4);

-- Visible with the event itself (the subquery runs under the caller's events policy);
-- hidden ticket types only for the event's editors.
drop policy if exists ticket_types_read on public.ticket_types;
create policy ticket_types_read on public.ticket_types for select to anon, authenticated
  using ((not hidden and exists (select 1 from public.events e where e.id = event_id))
         or localplus_private.event_role_rank(event_id) >= 3);

drop policy if exists ticket_types_manage on public.ticket_types;
create policy ticket_types_manage on public.ticket_types for all to authenticated
  using (localplus_private.event_role_rank(event_id) >= 3)
  with check (localplus_private.event_role_rank(event_id) >= 3);

drop policy if exists event_moderation_log_read on public.event_moderation_log;
create policy event_moderation_log_read on public.event_moderation_log for select to authenticated
  using (localplus_private.is_platform_admin() or localplus_private.event_role_rank(event_id) >= 4);

drop policy if exists event_counters_read on public.event_counters;
create policy event_counters_read on public.event_counters for select to anon, authenticated
  using (localplus_private.event_is_visible(event_id));

-- The old copies in `public` (reachable at /rest/v1/rpc/ on Supabase), now that nothing uses them.
drop function if exists public.is_platform_admin();
drop function if exists public.is_privileged();
drop function if exists public.is_business_partner(uuid, text[]);
drop function if exists public.event_role_rank(uuid);
drop function if exists public.event_business_id(uuid);
drop function if exists public.event_accepts_registrations(uuid);
drop function if exists public.event_is_visible(uuid);
drop function if exists public.event_needs_review(public.events, public.events);
drop function if exists public.event_registrations_per_day(uuid);
drop function if exists public.listed_event_candidates(text[], text[], box, real);
drop function if exists public.events_before_update();
drop function if exists public.events_before_write();
drop function if exists public.events_log_status_change();
drop function if exists public.events_create_counters();
drop function if exists public.event_seats_taken(uuid);
drop function if exists public.promote_waitlist(uuid);
drop function if exists public.event_participants_before_write();
drop function if exists public.event_participants_after_write();
drop function if exists public.events_after_capacity_change();
drop function if exists public.bump_counter(uuid, text, integer, integer);
drop function if exists public.event_participants_count();
drop function if exists public.event_saves_count();
drop function if exists public.refuse_change();

-- Function privileges: nothing for anyone, then the read helpers back. Trigger functions need no
-- EXECUTE to fire, and the ones that write (counters, waitlist) are never granted.
revoke all on all functions in schema localplus_private from public, anon, authenticated, service_role;
grant execute on function
  localplus_private.in_request(),
  localplus_private.is_platform_admin(),
  localplus_private.is_privileged(),
  localplus_private.is_business_partner(uuid, text[]),
  localplus_private.event_role_rank(uuid),
  localplus_private.event_accepts_registrations(uuid),
  localplus_private.caller_saved(uuid),
  localplus_private.event_is_visible(uuid),
  localplus_private.event_needs_review(public.events, public.events),
  localplus_private.event_registrations_per_day(uuid),
  localplus_private.listed_event_candidates(text[], text[], box, real)
  to anon, authenticated, service_role;

-- Table privileges: whatever defaults granted, exactly what the policies need. Column lists leave
-- out what the server owns.
revoke all on public.events, public.event_participants, public.event_permissions, public.ticket_types,
  public.event_moderation_log, public.event_saves, public.event_counters
  from public, anon, authenticated;
revoke all on sequence public.event_moderation_log_id_seq from public, anon, authenticated;

grant select on public.events, public.ticket_types, public.event_counters to anon, authenticated;
grant select, delete on public.events, public.event_participants, public.event_permissions,
  public.ticket_types, public.event_saves to authenticated;
grant select on public.event_moderation_log to authenticated;
grant insert (business_id, created_by, title, description, category, tags, starts_at, ends_at, timezone,
              venue_name, address, latitude, longitude, capacity, visibility, status,
              registration_opens_at, registration_closes_at, city)
  on public.events to authenticated;
grant update (business_id, title, description, category, tags, starts_at, ends_at, timezone,
              venue_name, address, latitude, longitude, capacity, visibility, status, status_reason,
              registration_opens_at, registration_closes_at, city)
  on public.events to authenticated;
grant insert (event_id, user_id, status, guest_count), update (status, guest_count)
  on public.event_participants to authenticated;
grant insert (event_id, user_id, role, expires_at), update (role, expires_at)
  on public.event_permissions to authenticated;
grant insert (event_id, occurrence_id, name, description, price_minor, currency, inventory, min_per_order,
              max_per_order, sales_starts_at, sales_ends_at, hidden, sort_order),
      update (occurrence_id, name, description, price_minor, currency, inventory, min_per_order,
              max_per_order, sales_starts_at, sales_ends_at, hidden, sort_order)
  on public.ticket_types to authenticated;
grant insert (user_id, event_id) on public.event_saves to authenticated;

-- The backend's own role may do everything (CONTRACT §3), except rewrite history.
grant all on public.events, public.event_participants, public.event_permissions, public.ticket_types,
  public.event_saves, public.event_counters to service_role;
revoke all on public.event_moderation_log from service_role;
grant select on public.event_moderation_log to service_role;
