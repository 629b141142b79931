-- Phase 1: moderation workflow with an append-only log, discovery search, saves, and the
-- counters behind partner stats and popularity sorting.

create extension if not exists pg_trgm;

alter table public.events add column if not exists city text check (char_length(city) <= 64);
alter table public.events add column if not exists source text check (char_length(source) <= 64);
-- Why the event has its current status: the rejection (or cancellation) reason the partner sees.
alter table public.events add column if not exists status_reason text check (char_length(status_reason) <= 2000);
alter table public.events add column if not exists submitted_at timestamptz;
alter table public.events add column if not exists published_at timestamptz;
-- Lower-cased text for search, maintained by events_before_write: all of it (matched as is), and
-- the short fields people name an event by (matched approximately, which costs per character).
alter table public.events add column if not exists search_text text not null default '';
alter table public.events add column if not exists search_keywords text not null default '';

create index if not exists events_search_text_trgm_idx on public.events using gin (search_text gin_trgm_ops)
  where status = 'published' and visibility = 'public';
create index if not exists events_search_keywords_trgm_idx on public.events
  using gin (search_keywords gin_trgm_ops)
  where status = 'published' and visibility = 'public';
create index if not exists events_listed_city_idx on public.events (city, starts_at, id)
  where status = 'published' and visibility = 'public';
create index if not exists events_listed_category_idx on public.events (category, starts_at, id)
  where status = 'published' and visibility = 'public';
create index if not exists events_listed_geo_idx on public.events using gist (point(longitude, latitude))
  where status = 'published' and visibility = 'public' and latitude is not null;
create index if not exists events_moderation_queue_idx on public.events (submitted_at, id)
  where status = 'pending_review';

-- Who may move an event between statuses. Enforced here so Supabase's REST obeys the same
-- rules as this API. Platform admins, service_role and trusted backend connections (no request
-- claims at all, e.g. migrations) may make any change.
create or replace function public.is_privileged() returns boolean
  language sql stable
  set search_path = ''
  as $$
    select public.is_platform_admin()
        or (current_user not in ('anon', 'authenticated') and (select auth.role()) is null)
  $$;

-- Edits to what reviewers vetted send a published event back to review; logistics
-- (times, capacity, registration window) do not.
create or replace function public.event_needs_review(old_event public.events, new_event public.events)
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

create or replace function public.events_before_write() returns trigger
  language plpgsql
  -- Not SECURITY DEFINER: current_user must be the caller's role for is_privileged().
  set search_path = ''
  as $$
declare
  v_privileged boolean := public.is_privileged();
  v_old_status text := case when tg_op = 'UPDATE' then old.status end;
begin
  new.search_keywords := lower(concat_ws(' ', new.title, new.category, array_to_string(new.tags, ' '),
                                         new.venue_name, new.city));
  new.search_text := concat_ws(' ', new.search_keywords, lower(left(new.description, 2000)));
  if tg_op = 'UPDATE' and not v_privileged and old.status = 'published' and new.status = 'published'
     and public.event_needs_review(old, new) then
    new.status := 'pending_review';
  end if;
  if new.status is not distinct from v_old_status then
    if tg_op = 'UPDATE' then
      new.status_reason := old.status_reason;
    end if;
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
      or (v_old_status <> 'cancelled' and new.status = 'cancelled' and public.event_role_rank(new.id) >= 4)
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
  if new.status = 'published' then
    new.published_at := coalesce(new.published_at, now());
  end if;
  return new;
end
$$;

drop trigger if exists events_before_write on public.events;
create trigger events_before_write before insert or update on public.events
  for each row execute function public.events_before_write();

update public.events
   set search_keywords = lower(concat_ws(' ', title, category, array_to_string(tags, ' '), venue_name, city)),
       search_text = lower(concat_ws(' ', title, category, array_to_string(tags, ' '), venue_name, city,
                                     left(description, 2000)))
 where search_text = '';

-- Cancelled events stay readable, but only if they were ever published.
drop policy if exists events_read on public.events;
create policy events_read on public.events for select to anon, authenticated
  using ((visibility <> 'private'
          and (status = 'published' or (status = 'cancelled' and published_at is not null)))
         or created_by = (select auth.uid())
         or public.event_role_rank(id) >= 1);

-- The append-only moderation log. No foreign key: the history outlives a deleted event.
create table if not exists public.event_moderation_log (
  id bigint generated always as identity primary key,
  event_id uuid not null,
  actor_id uuid,
  from_status text,
  to_status text not null,
  reason text,
  created_at timestamptz not null default now()
);

create index if not exists event_moderation_log_event_idx on public.event_moderation_log (event_id, id);

create or replace function public.events_log_status_change() returns trigger
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
  for each row execute function public.events_log_status_change();

create or replace function public.refuse_change() returns trigger
  language plpgsql
  set search_path = ''
  as $$
begin
  raise exception '% is append-only', tg_table_name using errcode = 'insufficient_privilege';
end
$$;

drop trigger if exists event_moderation_log_append_only on public.event_moderation_log;
create trigger event_moderation_log_append_only before update or delete on public.event_moderation_log
  for each row execute function public.refuse_change();

alter table public.event_moderation_log enable row level security;
drop policy if exists event_moderation_log_read on public.event_moderation_log;
create policy event_moderation_log_read on public.event_moderation_log for select to authenticated
  using (public.is_platform_admin() or public.event_role_rank(event_id) >= 4);
grant select on public.event_moderation_log to authenticated;
grant select on public.event_moderation_log to service_role;

-- Saves ("hearts").
create table if not exists public.event_saves (
  user_id uuid not null references auth.users (id) on delete cascade,
  event_id uuid not null references public.events (id) on delete cascade,
  created_at timestamptz not null default now(),
  primary key (user_id, event_id)
);

create index if not exists event_saves_event_idx on public.event_saves (event_id);
create index if not exists event_saves_user_recent_idx on public.event_saves (user_id, created_at desc, event_id);

alter table public.event_saves enable row level security;
drop policy if exists event_saves_own on public.event_saves;
create policy event_saves_own on public.event_saves for all to authenticated
  using (user_id = (select auth.uid()))
  -- One can only save an event one can see (the subquery runs under the events policy).
  with check (user_id = (select auth.uid()) and exists (select 1 from public.events e where e.id = event_id));
grant select, insert, delete on public.event_saves to authenticated;
grant all on public.event_saves to service_role;

-- Counters for stats and popularity, kept by triggers so reads never count rows.
create table if not exists public.event_counters (
  event_id uuid primary key references public.events (id) on delete cascade,
  going integer not null default 0,
  interested integer not null default 0,
  waitlisted integer not null default 0,
  cancelled integer not null default 0,
  attended integer not null default 0,
  guests integer not null default 0,
  saves integer not null default 0,
  popularity integer generated always as (going + attended + interested + saves) stored
);

create index if not exists event_counters_popularity_idx on public.event_counters (popularity desc, event_id);

alter table public.event_counters enable row level security;
-- Whether the caller may see an event, by the events policy itself (SECURITY INVOKER). The SET
-- clause keeps Postgres from inlining it, so it is checked per row by primary key rather than
-- by hashing every event the caller can see (which made a popularity sort read them all).
create or replace function public.event_is_visible(p_event_id uuid) returns boolean
  language sql stable
  set search_path = ''
  as $$
    select exists (select 1 from public.events e where e.id = p_event_id)
  $$;

drop policy if exists event_counters_read on public.event_counters;
create policy event_counters_read on public.event_counters for select to anon, authenticated
  using (public.event_is_visible(event_id));
grant select on public.event_counters to anon, authenticated;
grant all on public.event_counters to service_role;

-- Every event gets its counters row when it is created, so the counting triggers only ever
-- update (a cascade delete of an event must not try to recreate the row).
create or replace function public.events_create_counters() returns trigger
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
  for each row execute function public.events_create_counters();

create or replace function public.bump_counter(p_event_id uuid, p_status text, p_delta integer, p_guests integer)
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

create or replace function public.event_participants_count() returns trigger
  language plpgsql security definer
  set search_path = ''
  as $$
begin
  if tg_op in ('UPDATE', 'DELETE') then
    perform public.bump_counter(old.event_id, old.status, -1, old.guest_count);
  end if;
  if tg_op in ('INSERT', 'UPDATE') then
    perform public.bump_counter(new.event_id, new.status, 1, new.guest_count);
  end if;
  return null;
end
$$;

drop trigger if exists event_participants_count on public.event_participants;
create trigger event_participants_count after insert or update or delete on public.event_participants
  for each row execute function public.event_participants_count();

create or replace function public.event_saves_count() returns trigger
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
  for each row execute function public.event_saves_count();

-- Seats taken now come from the counters (one row read) instead of summing every registration
-- of the event on each registration. The counting trigger must run before the one that promotes
-- from the waitlist, so the promotion sees the place just given up: triggers fire in name order.
create or replace function public.event_seats_taken(p_event_id uuid) returns integer
  language sql stable security definer
  set search_path = ''
  as $$
    select coalesce((select going + attended + guests from public.event_counters where event_id = p_event_id), 0)
  $$;

drop trigger if exists event_participants_after_write on public.event_participants;
drop trigger if exists event_participants_promote_waitlist on public.event_participants;
create trigger event_participants_promote_waitlist after update or delete on public.event_participants
  for each row execute function public.event_participants_after_write();

-- Backfill counters for events that existed before this migration.
insert into public.event_counters (event_id, going, interested, waitlisted, cancelled, attended, guests)
select e.id,
       count(*) filter (where p.status = 'going'),
       count(*) filter (where p.status = 'interested'),
       count(*) filter (where p.status = 'waitlisted'),
       count(*) filter (where p.status = 'cancelled'),
       count(*) filter (where p.status = 'attended'),
       coalesce(sum(p.guest_count) filter (where p.status in ('going', 'attended')), 0)
  from public.events e left join public.event_participants p on p.event_id = e.id
 group by e.id
on conflict (event_id) do nothing;

-- Great-circle distance in km (no PostGIS here, and it must run on Supabase too).
create or replace function public.distance_km(lat1 double precision, lng1 double precision,
                                              lat2 double precision, lng2 double precision)
  returns double precision
  language sql immutable parallel safe
  set search_path = ''
  as $$
    select 2 * 6371.0088 * asin(least(1, sqrt(
      power(sin(radians(lat2 - lat1) / 2), 2)
      + cos(radians(lat1)) * cos(radians(lat2)) * power(sin(radians(lng2 - lng1) / 2), 2))))
  $$;

-- Registrations per day in the event's time zone, for its viewers and up (who may not read the
-- individual registrations themselves).
create or replace function public.event_registrations_per_day(p_event_id uuid)
  returns table (day date, registrations integer)
  language sql stable security definer
  set search_path = ''
  as $$
    select (p.created_at at time zone e.timezone)::date, count(*)::integer
      from public.event_participants p join public.events e on e.id = p.event_id
     where p.event_id = p_event_id and public.event_role_rank(p_event_id) >= 2
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
create or replace function public.listed_event_candidates(p_words text[], p_patterns text[], p_box box,
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
