-- Phase 0: events, their participants and per-event permissions, guarded by row-level security.

create or replace function public.is_valid_timezone(tz text) returns boolean
  language plpgsql immutable
  set search_path = ''
  as $$
begin
  -- Only IANA names ("Asia/Bangkok", "UTC"), not POSIX offsets such as "XYZ+3".
  if tz is null or tz !~ '^[A-Za-z][A-Za-z_]*(/[A-Za-z0-9_+-]+)*$' then
    return false;
  end if;
  perform now() at time zone tz;
  return true;
exception when invalid_parameter_value then
  return false;
end
$$;

create or replace function public.are_valid_tags(tags text[]) returns boolean
  language sql immutable
  set search_path = ''
  as $$
    select coalesce(pg_catalog.cardinality(tags) <= 20, true)
       and not exists (select 1 from pg_catalog.unnest(tags) t where pg_catalog.char_length(t) not between 1 and 50)
  $$;

create table if not exists public.events (
  id uuid primary key default gen_random_uuid(),
  business_id uuid references public.businesses (id) on delete cascade,
  created_by uuid references auth.users (id) on delete set null,
  title text not null check (char_length(title) between 1 and 200),
  description text not null default '' check (char_length(description) <= 20000),
  category text not null default '' check (char_length(category) <= 64),
  tags text[] not null default '{}' check (public.are_valid_tags(tags)),
  starts_at timestamptz not null,
  ends_at timestamptz not null,
  timezone text not null check (public.is_valid_timezone(timezone)),
  venue_name text not null default '' check (char_length(venue_name) <= 200),
  address text not null default '' check (char_length(address) <= 500),
  latitude double precision check (latitude between -90 and 90),
  longitude double precision check (longitude between -180 and 180),
  capacity integer check (capacity between 1 and 1000000),
  visibility text not null default 'public' check (visibility in ('public', 'unlisted', 'private')),
  status text not null default 'draft'
    check (status in ('draft', 'pending_review', 'published', 'rejected', 'cancelled')),
  registration_opens_at timestamptz,
  registration_closes_at timestamptz,
  version bigint not null default 1,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  constraint events_ends_after_starts check (ends_at > starts_at),
  constraint events_coordinates_paired check ((latitude is null) = (longitude is null)),
  constraint events_registration_window check (registration_closes_at > registration_opens_at)
);

create index if not exists events_created_by_idx on public.events (created_by);
create index if not exists events_business_id_idx on public.events (business_id);
create index if not exists events_listed_idx on public.events (starts_at, id)
  where status = 'published' and visibility = 'public';

create table if not exists public.event_participants (
  event_id uuid not null references public.events (id) on delete cascade,
  user_id uuid not null references auth.users (id) on delete cascade,
  status text not null default 'going'
    check (status in ('going', 'interested', 'waitlisted', 'cancelled', 'attended')),
  guest_count integer not null default 0 check (guest_count between 0 and 50),
  -- Waitlist order: when the row last changed status.
  status_changed_at timestamptz not null default clock_timestamp(),
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  primary key (event_id, user_id)
);

create index if not exists event_participants_user_id_idx on public.event_participants (user_id);
create index if not exists event_participants_queue_idx
  on public.event_participants (event_id, status, status_changed_at);

create table if not exists public.event_permissions (
  event_id uuid not null references public.events (id) on delete cascade,
  user_id uuid not null references auth.users (id) on delete cascade,
  role text not null check (role in ('owner', 'editor', 'viewer')),
  granted_by uuid references auth.users (id) on delete set null,
  expires_at timestamptz,
  created_at timestamptz not null default now(),
  primary key (event_id, user_id)
);

create index if not exists event_permissions_user_id_idx on public.event_permissions (user_id);

-- Authorization helpers. SECURITY DEFINER so policies can consult other tables without recursing
-- through their policies; search_path pinned so callers cannot shadow the tables they read.

create or replace function public.is_platform_admin() returns boolean
  language sql stable
  set search_path = ''
  as $$
    select coalesce((select auth.jwt()) -> 'app_metadata' ->> 'role' = 'admin', false)
        or coalesce((select auth.role()) = 'service_role', false)
  $$;

create or replace function public.is_business_partner(p_business_id uuid, p_roles text[]) returns boolean
  language sql stable security definer
  set search_path = ''
  as $$
    select exists (
      select 1 from public.partners p
      where p.business_id = p_business_id and p.user_id = (select auth.uid()) and p.role = any (p_roles)
    )
  $$;

-- The caller's rank on an event: 4 owner (also platform admins), 3 editor, 2 viewer,
-- 1 participant, 0 nothing. The highest of creator, business partner, explicit permission
-- and registration wins (CONTRACT §3).
create or replace function public.event_role_rank(p_event_id uuid) returns integer
  language sql stable security definer
  set search_path = ''
  as $$
    select case when public.is_platform_admin() then 4 else coalesce(greatest(
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

create or replace function public.event_business_id(p_event_id uuid) returns uuid
  language sql stable security definer
  set search_path = ''
  as $$
    select business_id from public.events where id = p_event_id
  $$;

-- Self-registration is open only on published events the caller can see, inside the window.
create or replace function public.event_accepts_registrations(p_event_id uuid) returns boolean
  language sql stable security definer
  set search_path = ''
  as $$
    select exists (
      select 1 from public.events e
      where e.id = p_event_id
        and e.status = 'published'
        and (e.visibility <> 'private' or public.event_role_rank(e.id) >= 1)
        and (e.registration_opens_at is null or e.registration_opens_at <= now())
        and coalesce(e.registration_closes_at, e.ends_at) > now()
    )
  $$;

-- Row bookkeeping.

create or replace function public.events_before_update() returns trigger
  language plpgsql
  set search_path = ''
  as $$
begin
  new.id := old.id;
  new.created_by := old.created_by;
  new.created_at := old.created_at;
  new.version := old.version + 1;
  new.updated_at := now();
  return new;
end
$$;

drop trigger if exists events_before_update on public.events;
create trigger events_before_update before update on public.events
  for each row execute function public.events_before_update();

-- Capacity. Seats are handed out under a lock on the event row, so concurrent registrations
-- queue up and the headcount of people going or checked in ("attended", guests included) never
-- passes capacity, whether the write comes through this API or straight through Supabase's REST.

-- Places taken at an event: people going or checked in, with their guests. Callers hold the
-- event's row lock, so the figure cannot change under them.
create or replace function public.event_seats_taken(p_event_id uuid) returns integer
  language sql stable security definer
  set search_path = ''
  as $$
    select coalesce(sum(1 + guest_count), 0)::integer from public.event_participants
     where event_id = p_event_id and status in ('going', 'attended')
  $$;

create or replace function public.promote_waitlist(p_event_id uuid) returns integer
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
  v_taken := public.event_seats_taken(p_event_id);
  -- Strictly first come, first served: stop at the first person who does not fit.
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

create or replace function public.event_participants_before_write() returns trigger
  language plpgsql security definer
  set search_path = ''
  as $$
declare
  v_capacity integer;
  v_taken integer;
begin
  if tg_op = 'UPDATE' then
    new.event_id := old.event_id;
    new.user_id := old.user_id;
    new.created_at := old.created_at;
    new.updated_at := now();
    if new.status is distinct from old.status then
      new.status_changed_at := clock_timestamp();
    else
      new.status_changed_at := old.status_changed_at;
    end if;
  end if;
  if new.status <> 'going'
     or (tg_op = 'UPDATE' and old.status = 'going' and new.guest_count <= old.guest_count) then
    return new;
  end if;
  select capacity into v_capacity from public.events where id = new.event_id for update;
  if v_capacity is null then
    return new;
  end if;
  -- Everyone else's places: this row's old version is counted in the total.
  v_taken := public.event_seats_taken(new.event_id)
             - case when tg_op = 'UPDATE' and old.status in ('going', 'attended') then 1 + old.guest_count else 0 end;
  if v_taken + 1 + new.guest_count > v_capacity then
    if tg_op = 'UPDATE' and old.status = 'going' then
      raise exception 'not enough capacity left for % guests', new.guest_count
        using errcode = 'P0001', hint = 'CAPACITY_EXCEEDED';
    end if;
    new.status := 'waitlisted';
    new.status_changed_at := clock_timestamp();
  end if;
  return new;
end
$$;

create or replace function public.event_participants_after_write() returns trigger
  language plpgsql security definer
  set search_path = ''
  as $$
begin
  -- Only a seat given up (no longer going, or fewer guests) can let someone in; checking in
  -- ("attended") keeps the seat.
  if old.status = 'going'
     and (tg_op = 'DELETE' or new.status not in ('going', 'attended') or new.guest_count < old.guest_count) then
    perform public.promote_waitlist(old.event_id);
  end if;
  return null;
end
$$;

drop trigger if exists event_participants_before_write on public.event_participants;
create trigger event_participants_before_write before insert or update on public.event_participants
  for each row execute function public.event_participants_before_write();

drop trigger if exists event_participants_after_write on public.event_participants;
create trigger event_participants_after_write after update or delete on public.event_participants
  for each row execute function public.event_participants_after_write();

create or replace function public.events_after_capacity_change() returns trigger
  language plpgsql security definer
  set search_path = ''
  as $$
begin
  if new.capacity is null or new.capacity > old.capacity then
    perform public.promote_waitlist(new.id);
  end if;
  return null;
end
$$;

drop trigger if exists events_after_capacity_change on public.events;
create trigger events_after_capacity_change after update of capacity on public.events
  for each row when (new.capacity is distinct from old.capacity)
  execute function public.events_after_capacity_change();

-- Row-level security: the single source of truth for who may do what (CONTRACT §3).

alter table public.events enable row level security;
alter table public.event_participants enable row level security;
alter table public.event_permissions enable row level security;

drop policy if exists events_read on public.events;
create policy events_read on public.events for select to anon, authenticated
  using ((status in ('published', 'cancelled') and visibility <> 'private')
         -- Checked on the row itself as well: INSERT ... RETURNING must see the new row, which
         -- event_role_rank() (reading the statement's snapshot) cannot yet.
         or created_by = (select auth.uid())
         or public.event_role_rank(id) >= 1);

drop policy if exists events_create on public.events;
create policy events_create on public.events for insert to authenticated
  with check (
    public.is_platform_admin()
    or (created_by = (select auth.uid())
        and (business_id is null or public.is_business_partner(business_id, array['owner', 'editor'])))
  );

drop policy if exists events_update on public.events;
create policy events_update on public.events for update to authenticated
  using (public.event_role_rank(id) >= 3)
  with check (
    public.event_role_rank(id) >= 3
    -- Moving an event to another business takes owner/editor rights there.
    and (business_id is not distinct from public.event_business_id(id)
         or public.is_platform_admin()
         or public.is_business_partner(business_id, array['owner', 'editor']))
  );

drop policy if exists events_delete on public.events;
create policy events_delete on public.events for delete to authenticated
  using (public.event_role_rank(id) >= 4);

drop policy if exists event_participants_read on public.event_participants;
create policy event_participants_read on public.event_participants for select to authenticated
  using (user_id = (select auth.uid()) or public.event_role_rank(event_id) >= 3);

drop policy if exists event_participants_create on public.event_participants;
create policy event_participants_create on public.event_participants for insert to authenticated
  with check (
    public.event_role_rank(event_id) >= 3
    or (user_id = (select auth.uid()) and status in ('going', 'interested', 'waitlisted')
        and public.event_accepts_registrations(event_id))
  );

drop policy if exists event_participants_update on public.event_participants;
create policy event_participants_update on public.event_participants for update to authenticated
  using (user_id = (select auth.uid()) or public.event_role_rank(event_id) >= 3)
  with check (
    public.event_role_rank(event_id) >= 3
    or (user_id = (select auth.uid())
        and (status = 'cancelled'
             or (status in ('going', 'interested', 'waitlisted')
                 and public.event_accepts_registrations(event_id))))
  );

drop policy if exists event_participants_delete on public.event_participants;
create policy event_participants_delete on public.event_participants for delete to authenticated
  using (user_id = (select auth.uid()) or public.event_role_rank(event_id) >= 3);

drop policy if exists event_permissions_read on public.event_permissions;
create policy event_permissions_read on public.event_permissions for select to authenticated
  using (user_id = (select auth.uid()) or public.event_role_rank(event_id) >= 3);

drop policy if exists event_permissions_manage on public.event_permissions;
create policy event_permissions_manage on public.event_permissions for all to authenticated
  using (public.event_role_rank(event_id) >= 4)
  with check (public.event_role_rank(event_id) >= 4);

grant select on public.events to anon, authenticated;
grant insert, update, delete on public.events to authenticated;
grant select, insert, update, delete on public.event_participants, public.event_permissions to authenticated;
grant all on public.events, public.event_participants, public.event_permissions to service_role;
