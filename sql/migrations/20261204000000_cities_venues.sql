-- Phase 4: cities and venues. Until now `events.city` was free text; cities become rows (slug, name,
-- country, time zone, centre and bounds), venues belong to a city (and optionally a business), and
-- every event gets `city_id` (resolved from its city slug by a trigger) and may name its `venue_id`.
-- Existing events are backfilled from their free-text city, or from their coordinates where it is
-- missing.

create table if not exists public.cities (
  id uuid primary key default gen_random_uuid(),
  slug text not null unique check (slug ~ '^[a-z0-9]+(-[a-z0-9]+)*$' and char_length(slug) <= 64),
  name text not null check (char_length(name) between 1 and 100),
  -- ISO 3166-1 alpha-2.
  country text not null check (country ~ '^[A-Z]{2}$'),
  timezone text not null check (public.is_valid_timezone(timezone)),
  latitude double precision not null check (latitude between -90 and 90),
  longitude double precision not null check (longitude between -180 and 180),
  -- What counts as in the city, for events with coordinates and no city.
  bounds box not null,
  created_at timestamptz not null default now()
);

insert into public.cities (slug, name, country, timezone, latitude, longitude, bounds) values
  ('bangkok', 'Bangkok', 'TH', 'Asia/Bangkok', 13.7563, 100.5018, box(point(100.3279, 13.4940), point(100.9384, 13.9552))),
  ('chiang-mai', 'Chiang Mai', 'TH', 'Asia/Bangkok', 18.7883, 98.9853, box(point(98.8500, 18.6500), point(99.1200, 18.9500))),
  ('phuket', 'Phuket', 'TH', 'Asia/Bangkok', 7.8804, 98.3923, box(point(98.2500, 7.7500), point(98.4800, 8.2000))),
  ('pattaya', 'Pattaya', 'TH', 'Asia/Bangkok', 12.9236, 100.8825, box(point(100.8500, 12.8500), point(100.9700, 13.0100))),
  ('singapore', 'Singapore', 'SG', 'Asia/Singapore', 1.3521, 103.8198, box(point(103.6000, 1.1500), point(104.1000, 1.4800))),
  ('kuala-lumpur', 'Kuala Lumpur', 'MY', 'Asia/Kuala_Lumpur', 3.1390, 101.6869, box(point(101.6000, 3.0300), point(101.7600, 3.2500)))
on conflict (slug) do nothing;

create table if not exists public.venues (
  id uuid primary key default gen_random_uuid(),
  city_id uuid not null references public.cities (id) on delete restrict,
  business_id uuid references public.businesses (id) on delete cascade,
  name text not null check (char_length(name) between 1 and 200),
  address text not null default '' check (char_length(address) <= 500),
  latitude double precision check (latitude between -90 and 90),
  longitude double precision check (longitude between -180 and 180),
  created_by uuid references auth.users (id) on delete set null,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  constraint venues_coordinates_paired check ((latitude is null) = (longitude is null))
);

create index if not exists venues_city_idx on public.venues (city_id, name, id);
create index if not exists venues_business_idx on public.venues (business_id);

alter table public.events add column if not exists city_id uuid references public.cities (id) on delete restrict;
alter table public.events add column if not exists venue_id uuid references public.venues (id) on delete set null;

create index if not exists events_listed_city_id_idx on public.events (city_id, starts_at, id)
  where status = 'published' and visibility = 'public';
create index if not exists events_venue_idx on public.events (venue_id);

-- The city an event is in: its city slug when that is a known city (then also normalised to the
-- slug), else the city its coordinates fall in; free text that names no city stays as it was (the
-- API's `?city=` filters only know cities). Not SECURITY DEFINER: cities are readable by everyone.
create or replace function localplus_private.events_resolve_city() returns trigger
  language plpgsql
  set search_path = ''
  as $$
declare
  v_city public.cities;
begin
  if tg_op = 'UPDATE' and new.city is not distinct from old.city and new.latitude is not distinct from old.latitude
     and new.longitude is not distinct from old.longitude then
    return new;  -- requests cannot set city_id themselves (no grant); the backfill below does
  end if;
  select * into v_city from public.cities c where c.slug = lower(btrim(new.city)) or lower(c.name) = lower(btrim(new.city));
  if not found and coalesce(btrim(new.city), '') = '' and new.latitude is not null then
    select * into v_city from public.cities c
     where point(new.longitude, new.latitude) <@ c.bounds
     order by (c.latitude - new.latitude) ^ 2 + (c.longitude - new.longitude) ^ 2
     limit 1;
  end if;
  new.city_id := v_city.id;
  if v_city.id is not null then
    new.city := v_city.slug;
  end if;
  return new;
end
$$;

-- Named to fire before events_before_write (triggers fire in name order), which derives the search
-- text from the normalised city.
drop trigger if exists events_before_city on public.events;
create trigger events_before_city before insert or update on public.events
  for each row execute function localplus_private.events_resolve_city();

-- Backfill. events_before_write would bump every event's version and updated_at (and recompute
-- search text) for a column the API never set; inside this transaction, with the table locked against
-- writes, only the city is resolved.
do $$
begin
  if exists (select 1 from public.events where city_id is null) then
    lock table public.events in share row exclusive mode;
    alter table public.events disable trigger events_before_write;
    update public.events e
       set city_id = c.id, city = c.slug
      from public.cities c
     where e.city_id is null and (c.slug = lower(btrim(e.city)) or lower(c.name) = lower(btrim(e.city)));
    update public.events e
       set city_id = (select c.id from public.cities c where point(e.longitude, e.latitude) <@ c.bounds
                       order by (c.latitude - e.latitude) ^ 2 + (c.longitude - e.longitude) ^ 2 limit 1)
     where e.city_id is null and coalesce(btrim(e.city), '') = '' and e.latitude is not null;
    update public.events e set city = c.slug from public.cities c where e.city_id = c.id and e.city is distinct from c.slug;
    alter table public.events enable trigger events_before_write;
  end if;
end
$$;

create or replace function localplus_private.venues_before_write() returns trigger
  language plpgsql
  set search_path = ''
  as $$
begin
  if tg_op = 'UPDATE' then
    new.id := old.id;
    new.created_by := old.created_by;
    new.created_at := old.created_at;
  elsif localplus_private.in_request() then
    new.created_by := (select auth.uid());
    new.created_at := now();
  end if;
  new.updated_at := now();
  return new;
end
$$;

drop trigger if exists venues_before_write on public.venues;
create trigger venues_before_write before insert or update on public.venues
  for each row execute function localplus_private.venues_before_write();

-- Row-level security: cities and venues are public knowledge; cities are the server's, venues are
-- managed by platform admins and by the owner and editor partners of the venue's business.
alter table public.cities enable row level security;
alter table public.venues enable row level security;

drop policy if exists cities_read on public.cities;
create policy cities_read on public.cities for select to anon, authenticated using (true);

drop policy if exists venues_read on public.venues;
create policy venues_read on public.venues for select to anon, authenticated using (true);

drop policy if exists venues_manage on public.venues;
create policy venues_manage on public.venues for all to authenticated
  using (localplus_private.is_platform_admin()
         or (business_id is not null and localplus_private.is_business_partner(business_id, array['owner', 'editor'])))
  with check (localplus_private.is_platform_admin()
              or (business_id is not null and localplus_private.is_business_partner(business_id, array['owner', 'editor'])));

revoke all on public.cities, public.venues from public, anon, authenticated;
grant select on public.cities, public.venues to anon, authenticated;
grant insert (city_id, business_id, name, address, latitude, longitude),
      update (city_id, business_id, name, address, latitude, longitude),
      delete
  on public.venues to authenticated;
grant all on public.cities, public.venues to service_role;
-- Events name their venue; the city is resolved from `city` by the trigger (city_id is the server's).
grant insert (venue_id), update (venue_id) on public.events to authenticated;

revoke all on function localplus_private.events_resolve_city(), localplus_private.venues_before_write()
  from public, anon, authenticated, service_role;
