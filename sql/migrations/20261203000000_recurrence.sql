-- Phase 3: recurring events. An event may carry an RFC 5545 recurrence (RRULE, EXDATE, RDATE; DTSTART
-- is its starts_at in its time zone), written by the events service. The recurrence service expands it
-- into `event_occurrences` for a rolling horizon and keeps per-occurrence exceptions there, keyed by
-- the instance's original start; `event_series` records what each event's occurrences were built
-- from, so the service's horizon job finds and repairs every event whose occurrences are stale
-- (a failed call between the services, a write through Supabase's REST, the horizon moving on).

-- The recurrence, on the event. The service validates the rule fully (python-dateutil); the checks
-- here hold the shape for writes that come another way.
alter table public.events add column if not exists recurrence_rrule text;
alter table public.events add column if not exists recurrence_exdates timestamptz[] not null default '{}';
alter table public.events add column if not exists recurrence_rdates timestamptz[] not null default '{}';

do $$
begin
  if not exists (select 1 from pg_catalog.pg_constraint
                  where conrelid = 'public.events'::regclass and conname = 'events_recurrence_rrule_check') then
    alter table public.events add constraint events_recurrence_rrule_check check (
      char_length(recurrence_rrule) <= 500
      and recurrence_rrule ~ '^([A-Z]+=[A-Z0-9,+-]+)(;[A-Z]+=[A-Z0-9,+-]+)*$'
      and recurrence_rrule ~ '(^|;)FREQ=(YEARLY|MONTHLY|WEEKLY|DAILY|HOURLY)(;|$)'
      and recurrence_rrule !~ '(^|;)(DTSTART|TZID|BYSECOND)='
      and not (recurrence_rrule ~ '(^|;)COUNT=' and recurrence_rrule ~ '(^|;)UNTIL='));
  end if;
  if not exists (select 1 from pg_catalog.pg_constraint
                  where conrelid = 'public.events'::regclass and conname = 'events_recurrence_dates_check') then
    alter table public.events add constraint events_recurrence_dates_check check (
      (recurrence_rrule is not null or (cardinality(recurrence_exdates) = 0 and cardinality(recurrence_rdates) = 0))
      and cardinality(recurrence_exdates) <= 1000 and cardinality(recurrence_rdates) <= 1000
      and array_position(recurrence_exdates, null) is null and array_position(recurrence_rdates, null) is null
      and '1900-01-01 00:00:00+00'::timestamptz <= all (recurrence_exdates || recurrence_rdates)
      and '2200-01-01 00:00:00+00'::timestamptz > all (recurrence_exdates || recurrence_rdates));
  end if;
end
$$;

-- One dated instance of an event. A one-off event has one, with the event's own id. The server alone
-- writes them: the base times come from the event's schedule, the rest are exceptions an editor made
-- (moved, cancelled, own capacity, a note), which survive a rebuild wherever the original start
-- still belongs to the series. An occurrence the rule no longer yields is deleted, unless a
-- registration or a ticket type names it: then it stays, out of the series, as cancelled.
create table if not exists public.event_occurrences (
  id uuid primary key default gen_random_uuid(),
  event_id uuid not null references public.events (id) on delete cascade,
  -- Where the schedule put its start (iCalendar's RECURRENCE-ID): the key of its exceptions.
  original_starts_at timestamptz not null,
  starts_at timestamptz not null,
  ends_at timestamptz not null,
  moved boolean not null default false,
  cancelled boolean not null default false,
  in_series boolean not null default true,
  status text generated always as (case when cancelled or not in_series then 'cancelled' else 'scheduled' end) stored,
  -- Null: the event's capacity.
  capacity integer check (capacity between 1 and 1000000),
  note text not null default '' check (char_length(note) <= 2000),
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  constraint event_occurrences_ends_after_starts check (ends_at > starts_at),
  constraint event_occurrences_times_in_range check (
    original_starts_at >= '1900-01-01 00:00:00+00' and original_starts_at < '2200-01-01 00:00:00+00'
    and starts_at >= '1900-01-01 00:00:00+00' and ends_at < '2200-01-01 00:00:00+00'),
  constraint event_occurrences_original_key unique (event_id, original_starts_at),
  -- What registrations and ticket types refer to, so that an occurrence belongs to their event.
  constraint event_occurrences_of_event unique (id, event_id)
);

-- An event's occurrences in time order (its list, its feed, and "what's on" per event of a city).
create index if not exists event_occurrences_event_starts_idx on public.event_occurrences (event_id, starts_at, id);

-- What an event's occurrences were built from, and how far ahead. Server-only bookkeeping.
create table if not exists public.event_series (
  event_id uuid primary key references public.events (id) on delete cascade,
  -- The event's version and schedule (localplus_recurrence.rules.Schedule.fingerprint) when built.
  event_version bigint not null,
  fingerprint text not null,
  -- Occurrences exist for every instance that starts before this; `complete` once the series has
  -- no instance after it (a one-off event, COUNT or UNTIL reached).
  materialized_through timestamptz not null,
  complete boolean not null default false,
  built_at timestamptz not null default now()
);

-- Registrations and ticket types may be for one occurrence of their event.
alter table public.event_participants add column if not exists occurrence_id uuid;
create index if not exists event_participants_occurrence_idx on public.event_participants (occurrence_id, status)
  where occurrence_id is not null;
create index if not exists ticket_types_occurrence_idx on public.ticket_types (occurrence_id)
  where occurrence_id is not null;

do $$
declare
  v_fk record;
begin
  for v_fk in
    select * from (values
      ('public.event_participants'::regclass, 'event_participants_occurrence_fkey'),
      ('public.ticket_types'::regclass, 'ticket_types_occurrence_fkey')
    ) as f (table_name, constraint_name)
  loop
    if not exists (select 1 from pg_catalog.pg_constraint
                    where conrelid = v_fk.table_name and conname = v_fk.constraint_name) then
      execute format('alter table %s add constraint %I foreign key (occurrence_id, event_id) '
                     'references public.event_occurrences (id, event_id) not valid',
                     v_fk.table_name, v_fk.constraint_name);
    end if;
    begin
      execute format('alter table %s validate constraint %I', v_fk.table_name, v_fk.constraint_name);
    exception when foreign_key_violation then
      raise warning '% has rows naming an occurrence of another event (or none); new writes are checked',
        v_fk.table_name;
    end;
  end loop;
end
$$;

-- Capacity per occurrence: a registration for one occurrence takes a place of that occurrence
-- (its own capacity, else the event's), under a lock on the occurrence row; the event's counters
-- and a series-wide registration work as before. Replaces the hardening's trigger function.
create or replace function localplus_private.occurrence_seats_taken(p_occurrence_id uuid) returns integer
  language sql stable security definer
  set search_path = ''
  as $$
    select coalesce(sum(1 + guest_count), 0)::integer from public.event_participants
     where occurrence_id = p_occurrence_id and status in ('going', 'attended')
  $$;

-- A series-wide registration counts against the event's capacity, one for an occurrence against
-- that occurrence's: the event's seats are its counters less the per-occurrence ones.
create index if not exists event_participants_occurrence_seats_idx on public.event_participants (event_id)
  include (guest_count) where occurrence_id is not null and status in ('going', 'attended');

create or replace function localplus_private.event_seats_taken(p_event_id uuid) returns integer
  language sql stable security definer
  set search_path = ''
  as $$
    select coalesce((select going + attended + guests from public.event_counters where event_id = p_event_id), 0)
         - coalesce((select sum(1 + guest_count)::integer from public.event_participants
                       where event_id = p_event_id and occurrence_id is not null
                         and status in ('going', 'attended')), 0)
  $$;

-- The waitlist of the event (series-wide registrations) or of one occurrence: strictly first come,
-- first served, as before.
create or replace function localplus_private.promote_waitlist(p_event_id uuid, p_occurrence_id uuid) returns integer
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
  if p_occurrence_id is null then
    v_taken := localplus_private.event_seats_taken(p_event_id);
  else
    select coalesce(o.capacity, v_capacity) into v_capacity from public.event_occurrences o
     where o.id = p_occurrence_id and o.status = 'scheduled' for update;
    if not found then
      return 0;
    end if;
    v_taken := localplus_private.occurrence_seats_taken(p_occurrence_id);
  end if;
  for v_next in
    select user_id, guest_count from public.event_participants
     where event_id = p_event_id and status = 'waitlisted' and occurrence_id is not distinct from p_occurrence_id
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

drop function if exists localplus_private.promote_waitlist(uuid);

create or replace function localplus_private.event_participants_after_write() returns trigger
  language plpgsql security definer
  set search_path = ''
  as $$
begin
  if (old.status = 'going'
      and (tg_op = 'DELETE' or new.status not in ('going', 'attended') or new.guest_count < old.guest_count))
     or (old.status = 'waitlisted'
         and (tg_op = 'DELETE' or new.status not in ('waitlisted', 'going') or new.guest_count < old.guest_count)) then
    perform localplus_private.promote_waitlist(old.event_id, old.occurrence_id);
  end if;
  return null;
end
$$;

-- A larger event capacity also lets people in to the occurrences that take the event's.
create or replace function localplus_private.events_after_capacity_change() returns trigger
  language plpgsql security definer
  set search_path = ''
  as $$
declare
  v_occurrence uuid;
begin
  if new.capacity is null or new.capacity > old.capacity then
    perform localplus_private.promote_waitlist(new.id, null::uuid);
    for v_occurrence in
      select distinct p.occurrence_id from public.event_participants p
       where p.event_id = new.id and p.status = 'waitlisted' and p.occurrence_id is not null
    loop
      perform localplus_private.promote_waitlist(new.id, v_occurrence);
    end loop;
  end if;
  return null;
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
    if new.occurrence_id is distinct from old.occurrence_id and old.status in ('going', 'attended') then
      raise exception 'cancel the registration before registering for another occurrence'
        using errcode = 'P0001', hint = 'INVALID_STATE';
    end if;
  end if;
  new.updated_at := now();
  -- Only asking for a place, or for more places, needs a free one.
  if new.status <> 'going'
     or (tg_op = 'UPDATE' and old.status = 'going' and new.guest_count <= old.guest_count) then
    return new;
  end if;
  select capacity into v_capacity from public.events where id = new.event_id for update;
  if new.occurrence_id is not null then
    select coalesce(o.capacity, v_capacity) into v_capacity from public.event_occurrences o
     where o.id = new.occurrence_id and o.event_id = new.event_id for update;
    if not found or exists (select 1 from public.event_occurrences o
                             where o.id = new.occurrence_id and o.status = 'cancelled') then
      raise exception 'that occurrence does not take place' using errcode = 'P0001', hint = 'OCCURRENCE_CANCELLED';
    end if;
  end if;
  if v_capacity is null then
    return new;
  end if;
  -- Someone who asked earlier for the same places is still waiting: a row already on the waitlist
  -- waits behind the ones ahead of it, anyone else behind all of them.
  select exists (
    select 1 from public.event_participants w
     where w.event_id = new.event_id and w.status = 'waitlisted' and w.user_id <> new.user_id
       and w.occurrence_id is not distinct from new.occurrence_id
       and (tg_op = 'INSERT' or old.status <> 'waitlisted'
            or (w.status_changed_at, w.user_id) < (old.status_changed_at, old.user_id))
  ) into v_waiting;
  -- Everyone else's places: this row's old version is counted in the total.
  v_taken := case when new.occurrence_id is null then localplus_private.event_seats_taken(new.event_id)
                  else localplus_private.occurrence_seats_taken(new.occurrence_id) end
             - case when tg_op = 'UPDATE' and old.status in ('going', 'attended')
                         and old.occurrence_id is not distinct from new.occurrence_id
                    then 1 + old.guest_count else 0 end;
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

-- Row-level security: occurrences are readable with their event (by the events policy itself);
-- nothing here is writable by an API role. The series bookkeeping is the server's alone.
alter table public.event_occurrences enable row level security;
alter table public.event_series enable row level security;

drop policy if exists event_occurrences_read on public.event_occurrences;
create policy event_occurrences_read on public.event_occurrences for select to anon, authenticated
  using (localplus_private.event_is_visible(event_id));

revoke all on public.event_occurrences, public.event_series from public, anon, authenticated;
grant select on public.event_occurrences to anon, authenticated;
grant all on public.event_occurrences, public.event_series to service_role;

revoke all on function localplus_private.occurrence_seats_taken(uuid), localplus_private.event_seats_taken(uuid),
  localplus_private.promote_waitlist(uuid, uuid),
  localplus_private.event_participants_before_write(), localplus_private.event_participants_after_write(),
  localplus_private.events_after_capacity_change()
  from public, anon, authenticated, service_role;

-- The new columns editors set (the rest of each table's grants stay as the hardening made them).
grant insert (recurrence_rrule, recurrence_exdates, recurrence_rdates),
      update (recurrence_rrule, recurrence_exdates, recurrence_rdates)
  on public.events to authenticated;
grant insert (occurrence_id), update (occurrence_id) on public.event_participants to authenticated;
