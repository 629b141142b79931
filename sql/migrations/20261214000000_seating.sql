-- Phase 5: assigned seating. A venue's seating plans (zones, rows, seats with a position, a
-- category and an accessible flag, and general-admission areas), reusable by its events; an event
-- that uses a plan has its own seats (`event_seats`, one per plan seat, so a seat's id names the
-- event too), and each seat category is sold by one of the event's ticket types.
--
-- What a seat is doing (held by an unpaid order, sold, blocked by the event's editors) is a row of
-- `seat_claims` with the time range it is live for: a hold from its making until its order's hold
-- expires, a sale or a block from its making on, until released (cancel, refund, unblock). An
-- exclusion constraint lets no two claims of one seat (per occurrence) overlap in time: no seat is
-- ever held or sold twice, whatever the code does, and an expired hold's range has ended, so its
-- seat is free the moment it expires, before any sweeper.

do $$
begin
  -- btree_gist's equality on uuids in a GiST index; Supabase keeps extensions in their own schema.
  if exists (select 1 from pg_namespace where nspname = 'extensions') then
    create extension if not exists btree_gist with schema extensions;
  else
    create extension if not exists btree_gist;
  end if;
end
$$;

create table if not exists public.seating_plans (
  id uuid primary key default gen_random_uuid(),
  venue_id uuid not null references public.venues (id) on delete restrict,
  name text not null check (char_length(btrim(name)) between 1 and 200),
  -- [{name, category, capacity}]: areas sold by count (ticket types' inventory), not by seat.
  general_admission jsonb not null default '[]' check (jsonb_typeof(general_admission) = 'array'),
  created_by uuid,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now()
);

create index if not exists seating_plans_venue_idx on public.seating_plans (venue_id, created_at, id);

-- The plan's seats; the ranks are the plan's order (first zone, front row, seat order in the row),
-- which adjacency and best-available read.
create table if not exists public.plan_seats (
  id uuid primary key default gen_random_uuid(),
  plan_id uuid not null references public.seating_plans (id) on delete cascade,
  zone text not null check (char_length(zone) between 1 and 100),
  row_name text not null check (char_length(row_name) between 1 and 20),
  number text not null check (char_length(number) between 1 and 20),
  x real not null,
  y real not null,
  category text not null check (char_length(category) between 1 and 100),
  accessible boolean not null default false,
  zone_rank integer not null,
  row_rank integer not null,
  seat_rank integer not null,
  constraint plan_seats_seat_key unique (plan_id, zone, row_name, number)
);

create index if not exists plan_seats_row_idx on public.plan_seats (plan_id, zone_rank, row_rank, seat_rank);
create index if not exists plan_seats_category_idx on public.plan_seats (plan_id, category, zone_rank, row_rank);

alter table public.events add column if not exists seating_plan_id uuid references public.seating_plans (id);
alter table public.ticket_types add column if not exists seat_category text
  check (char_length(seat_category) between 1 and 100);
-- Each category is sold by one ticket type per event (and occurrence).
create unique index if not exists ticket_types_seat_category_key
  on public.ticket_types (event_id, coalesce(occurrence_id, event_id), seat_category) where seat_category is not null;

create table if not exists public.event_seats (
  id uuid primary key default gen_random_uuid(),
  event_id uuid not null references public.events (id) on delete cascade,
  plan_seat_id uuid not null references public.plan_seats (id) on delete cascade,
  constraint event_seats_seat_key unique (event_id, plan_seat_id)
);

create index if not exists event_seats_plan_seat_idx on public.event_seats (plan_seat_id);

create table if not exists public.seat_claims (
  id bigint generated always as identity primary key,
  seat_id uuid not null references public.event_seats (id) on delete cascade,
  -- The occurrence the seat is claimed for; the event's own id for a one-off event, or for a
  -- ticket type of a whole series.
  occurrence_key uuid not null,
  kind text not null check (kind in ('held', 'sold', 'blocked')),
  order_id uuid references public.orders (id) on delete cascade,
  ticket_type_id uuid references public.ticket_types (id) on delete cascade,
  during tstzrange not null,
  created_at timestamptz not null default now(),
  constraint seat_claims_order_check check ((kind = 'blocked') = (order_id is null)),
  -- THE guarantee: two claims of one seat for one occurrence never overlap in time.
  constraint seat_claims_one_at_a_time exclude using gist (seat_id with =, occurrence_key with =, during with &&)
);

create index if not exists seat_claims_order_idx on public.seat_claims (order_id) where order_id is not null;
create index if not exists seat_claims_occurrence_idx on public.seat_claims (occurrence_key, seat_id);

alter table public.tickets add column if not exists seat_id uuid references public.event_seats (id) on delete set null;
-- What the ticket says, copied when it is issued (a plan changed later does not rewrite tickets).
alter table public.tickets add column if not exists seat_zone text;
alter table public.tickets add column if not exists seat_row text;
alter table public.tickets add column if not exists seat_number text;

-- A claim is live when its range reaches past now (the transaction's start: a claim that ends in
-- between still counts, which only ever errs towards "taken"; the constraint decides). Inlined where
-- it is used (no SET clause, STABLE), so the claims' GiST index serves it.
create or replace function localplus_private.seat_claim_live(p_during tstzrange) returns boolean
  language sql stable
  as $$ select p_during && tstzrange(pg_catalog.now(), null) $$;

-- "Stalls A-12, Stalls A-13": seats as people name them, for messages (the first 20).
create or replace function localplus_private.seat_names(p_seat_ids uuid[]) returns text
  language sql stable
  set search_path = ''
  as $$
    select string_agg(name, ', ')
      from (select ps.zone || ' ' || ps.row_name || '-' || ps.number as name
              from public.event_seats es join public.plan_seats ps on ps.id = es.plan_seat_id
             where es.id = any (p_seat_ids)
             order by ps.zone_rank, ps.row_rank, ps.seat_rank
             limit 20) named
  $$;

-- A plan's seats from the API's zones JSON: [{name, rows: [{name, seats: [{number, x, y, category,
-- accessible}]}]}], ranked in the order given.
create or replace function localplus_private.plan_seats_of(p_zones jsonb)
  returns table (zone text, row_name text, number text, x real, y real, category text, accessible boolean,
                 zone_rank integer, row_rank integer, seat_rank integer)
  language sql immutable
  set search_path = ''
  as $$
    select z.value ->> 'name', r.value ->> 'name', s.value ->> 'number', (s.value ->> 'x')::real,
           (s.value ->> 'y')::real, s.value ->> 'category', coalesce((s.value ->> 'accessible')::boolean, false),
           z.ordinality::integer, r.ordinality::integer, s.ordinality::integer
      from jsonb_array_elements(p_zones) with ordinality z
      cross join lateral jsonb_array_elements(z.value -> 'rows') with ordinality r
      cross join lateral jsonb_array_elements(r.value -> 'seats') with ordinality s
  $$;

-- Seated ticket types sell the seats of their category (plus general-admission places of it): their
-- inventory is counted from the plan, whatever the request said.
create or replace function localplus_private.seat_category_inventory(p_event uuid, p_category text) returns integer
  language sql stable
  set search_path = ''
  as $$
    select (select count(*) from public.plan_seats ps where ps.plan_id = e.seating_plan_id and ps.category = p_category)::integer
           + coalesce((select sum((a ->> 'capacity')::integer) from public.seating_plans p,
                         jsonb_array_elements(p.general_admission) a
                        where p.id = e.seating_plan_id and a ->> 'category' = p_category), 0)::integer
      from public.events e where e.id = p_event
  $$;

create or replace function localplus_private.ticket_types_seat_category() returns trigger
  language plpgsql security definer
  set search_path = ''
  as $$
declare
  v_plan uuid;
begin
  if new.seat_category is null then
    return new;
  end if;
  select seating_plan_id into v_plan from public.events where id = new.event_id;
  if v_plan is null then
    raise exception 'the event has no seating plan: set its seating_plan_id first'
      using errcode = 'P0001', hint = 'NO_SEATING_PLAN';
  end if;
  if not exists (select 1 from public.plan_seats where plan_id = v_plan and category = new.seat_category)
     and not exists (select 1 from public.seating_plans p, jsonb_array_elements(p.general_admission) a
                      where p.id = v_plan and a ->> 'category' = new.seat_category) then
    raise exception 'the event''s seating plan has no category %', new.seat_category
      using errcode = 'P0001', hint = 'UNKNOWN_SEAT_CATEGORY';
  end if;
  new.inventory := localplus_private.seat_category_inventory(new.event_id, new.seat_category);
  return new;
end
$$;

drop trigger if exists ticket_types_seat_category on public.ticket_types;
create trigger ticket_types_seat_category before insert or update on public.ticket_types
  for each row execute function localplus_private.ticket_types_seat_category();

-- An event uses a plan of its own venue; changing it (or leaving it) needs its seats to be free.
create or replace function localplus_private.events_seating_plan() returns trigger
  language plpgsql security definer
  set search_path = ''
  as $$
declare
  v_busy uuid[];
begin
  if tg_op = 'UPDATE' and new.seating_plan_id is not distinct from old.seating_plan_id then
    return null;
  end if;
  if new.seating_plan_id is not null and not exists (
       select 1 from public.seating_plans where id = new.seating_plan_id and venue_id = new.venue_id) then
    raise exception 'seating_plan_id must be a seating plan of the event''s venue'
      using errcode = 'P0001', hint = 'INVALID_ARGUMENT';
  end if;
  if tg_op = 'UPDATE' then
    select array_agg(distinct c.seat_id) into v_busy
      from public.seat_claims c join public.event_seats es on es.id = c.seat_id
     where es.event_id = new.id and c.kind <> 'blocked' and localplus_private.seat_claim_live(c.during);
    if v_busy is not null then
      raise exception 'these seats are held or sold, so the plan cannot change: %', localplus_private.seat_names(v_busy)
        using errcode = 'LP409', hint = 'SEATS_IN_USE';
    end if;
    delete from public.event_seats where event_id = new.id;
  end if;
  if new.seating_plan_id is not null then
    insert into public.event_seats (event_id, plan_seat_id)
    select new.id, ps.id from public.plan_seats ps where ps.plan_id = new.seating_plan_id;
  end if;
  update public.ticket_types set updated_at = now() where event_id = new.id and seat_category is not null;
  return null;
end
$$;

drop trigger if exists events_seating_plan on public.events;
create trigger events_seating_plan after insert or update of seating_plan_id on public.events
  for each row execute function localplus_private.events_seating_plan();

-- Ordering tickets of a seated category goes through seats: an item of such a type is as many
-- seats as its order claims of it (the seat orders below insert their claims first).
create or replace function localplus_private.order_items_need_seats() returns trigger
  language plpgsql security definer
  set search_path = ''
  as $$
begin
  if exists (select 1 from public.ticket_types t join public.events e on e.id = t.event_id
               join public.plan_seats ps on ps.plan_id = e.seating_plan_id and ps.category = t.seat_category
              where t.id = new.ticket_type_id)
     and new.quantity <> (select count(*) from public.seat_claims
                           where order_id = new.order_id and ticket_type_id = new.ticket_type_id) then
    raise exception 'tickets of this type are for seats: order seats[] or best_available'
      using errcode = 'P0001', hint = 'SEATS_REQUIRED';
  end if;
  return new;
end
$$;

drop trigger if exists order_items_need_seats on public.order_items;
create trigger order_items_need_seats before insert or update on public.order_items
  for each row execute function localplus_private.order_items_need_seats();

-- An order that is cancelled, expires or is refunded gives back its seats that no valid ticket is
-- for, at once; a refunded (void) ticket gives back its own. A claim given back ends at now() (the
-- transaction's start, what seat_claim_live compares with), so it reads as free in the same transaction.
create or replace function localplus_private.release_seats() returns trigger
  language plpgsql security definer
  set search_path = ''
  as $$
begin
  if tg_table_name = 'orders' then
    -- (A free order's single refunded ticket may mark it refunded: seats of valid tickets stay sold.)
    if new.status in ('cancelled', 'expired', 'refunded') and new.status is distinct from old.status then
      update public.seat_claims c
         set during = tstzrange(lower(c.during), greatest(lower(c.during), least(upper(c.during), now())))
       where c.order_id = new.id and localplus_private.seat_claim_live(c.during)
         and not exists (select 1 from public.tickets t
                          where t.order_id = new.id and t.seat_id = c.seat_id and t.status <> 'void');
    end if;
  elsif new.status = 'void' and old.status <> 'void' and new.seat_id is not null then
    update public.seat_claims
       set during = tstzrange(lower(during), greatest(lower(during), least(upper(during), now())))
     where order_id = new.order_id and seat_id = new.seat_id and localplus_private.seat_claim_live(during);
  end if;
  return null;
end
$$;

drop trigger if exists orders_release_seats on public.orders;
create trigger orders_release_seats after update of status on public.orders
  for each row execute function localplus_private.release_seats();
drop trigger if exists tickets_release_seats on public.tickets;
create trigger tickets_release_seats after update of status on public.tickets
  for each row execute function localplus_private.release_seats();

-- The best `p_quantity` adjacent free seats of a category in one row, or null. Ranking: a block that
-- would leave one empty seat between itself and a taken seat comes after every block that does not;
-- then the plan's zone order, then its row order (front first), then the block whose centre is
-- nearest the row's centre, then the leftmost. Rows are looked at in that order, one at a time, and
-- the first row with a block that strands nobody ends the search (typically after a row or two).
create or replace function localplus_private.best_seats(p_event uuid, p_occurrence_key uuid, p_category text,
                                                        p_quantity integer)
  returns uuid[]
  language plpgsql volatile
  set search_path = ''
  as $$
declare
  v_plan uuid;
  v_row record;
  v_block record;
  v_fallback uuid[];
begin
  select seating_plan_id into v_plan from public.events where id = p_event;
  for v_row in
    -- Only rows with enough free seats of the category (counted from the live claims, a few) are read.
    with taken as (
      select ps.zone_rank, ps.row_rank, count(*) as seats
        from public.seat_claims c
        join public.event_seats es on es.id = c.seat_id
        join public.plan_seats ps on ps.id = es.plan_seat_id
       where c.occurrence_key = p_occurrence_key and es.event_id = p_event and ps.category = p_category
         and localplus_private.seat_claim_live(c.during)
       group by ps.zone_rank, ps.row_rank
    )
    select r.zone_rank, r.row_rank
      from (select zone_rank, row_rank, count(*) as seats from public.plan_seats
             where plan_id = v_plan and category = p_category group by zone_rank, row_rank) r
      left join taken t using (zone_rank, row_rank)
     where r.seats - coalesce(t.seats, 0) >= p_quantity
     order by r.zone_rank, r.row_rank
  loop
    with seats as materialized (
      select es.id, ps.seat_rank, ps.category = p_category as of_category, c.id is null as free
        from public.plan_seats ps
        -- One index probe per seat of the row (a join would read every seat of the event).
        cross join lateral (select e.id from public.event_seats e
                             where e.event_id = p_event and e.plan_seat_id = ps.id limit 1) es
        left join public.seat_claims c
          on c.seat_id = es.id and c.occurrence_key = p_occurrence_key and localplus_private.seat_claim_live(c.during)
       where ps.plan_id = v_plan and ps.zone_rank = v_row.zone_rank and ps.row_rank = v_row.row_rank
    ),
    placed as (
      select s.*, row_number() over w as pos, count(*) over () as row_length,
             count(*) filter (where free and of_category) over (w rows between current row and p_quantity - 1 following)
               as fits,
             lag(free, 1) over w as left1, lag(free, 2) over w as left2,
             lead(free, p_quantity) over w as right1, lead(free, p_quantity + 1) over w as right2
        from seats s
      window w as (order by seat_rank)
    ),
    best as (
      select pos, coalesce(left1 and not left2, false) or coalesce(right1 and not right2, false) as strands
        from placed
       where fits = p_quantity
       order by 2, abs(2 * pos + p_quantity - 1 - (row_length + 1)), pos
       limit 1
    )
    select b.strands, array_agg(p.id order by p.pos) as ids
      into v_block
      from best b join placed p on p.pos between b.pos and b.pos + p_quantity - 1
     group by b.strands;
    if v_block.ids is not null then
      if not v_block.strands then
        return v_block.ids;
      end if;
      v_fallback := coalesce(v_fallback, v_block.ids);
    end if;
  end loop;
  return v_fallback;
end
$$;

-- Reserve seats for a buyer: chosen ones (p_seats, all or none) or the best p_quantity of a seated
-- ticket type. The claims are what keeps two buyers off one seat (the exclusion constraint; a
-- taken seat is a 409 SEAT_UNAVAILABLE naming it); best-available picks under a lock per ticket
-- type, so concurrent pickers do not all pick the same block, and picks again when a chosen seat
-- was taken meanwhile by a buyer of chosen seats. The same buyer's same request_id answers with the
-- order it made before.
create or replace function localplus_private.reserve_seats(p_buyer uuid, p_request_id text, p_event uuid,
                                                           p_occurrence uuid, p_seats uuid[], p_best_type uuid,
                                                           p_quantity integer, p_hold interval)
  returns uuid
  language plpgsql security definer
  set search_path = ''
  as $$
declare
  v_order uuid;
  v_key uuid;
  v_expires timestamptz := now() + p_hold;
  v_type record;
  v_category text;
  v_seats uuid[] := p_seats;
  v_types uuid[];  -- the ticket type selling each of v_seats
  v_taken uuid[];
  v_attempt integer := 0;
  v_currency text;
  v_occurrence uuid;
begin
  select id into v_order from public.orders where buyer_id = p_buyer and request_id = p_request_id;
  if found then
    return v_order;
  end if;
  if p_best_type is not null then
    select t.seat_category, coalesce(t.occurrence_id, t.event_id) into v_category, v_key
      from public.ticket_types t where t.id = p_best_type and t.event_id = p_event;
    if v_category is null or not exists (
         select 1 from public.events e join public.plan_seats ps on ps.plan_id = e.seating_plan_id
          where e.id = p_event and ps.category = v_category) then
      raise exception 'best_available needs a ticket type that sells seats' using errcode = 'P0001',
        hint = 'INVALID_ORDER';
    end if;
    v_types := array[p_best_type];
    perform pg_advisory_xact_lock(hashtextextended(p_best_type::text, 0));
  else
    -- Which ticket type sells each seat: the event's type of its category (for the occurrence). The
    -- plan's seat rows are shared-locked, so the plan cannot recategorise or drop them meanwhile.
    select array_agg(s.id order by s.id), array_agg(s.type_id order by s.id) into v_seats, v_types
      from (select es.id, (select t.id from public.ticket_types t
                            where t.event_id = p_event and t.seat_category = ps.category
                              and (p_occurrence is null or coalesce(t.occurrence_id, t.event_id) = p_occurrence)
                            order by t.id limit 1) as type_id
              from public.event_seats es join public.plan_seats ps on ps.id = es.plan_seat_id
             where es.id = any (p_seats) and es.event_id = p_event
               for share of ps) s;
    if coalesce(cardinality(v_seats), 0) <> cardinality(p_seats) then
      raise exception 'some of those seats are not this event''s' using errcode = 'P0001', hint = 'INVALID_ORDER';
    end if;
    if array_position(v_types, null) is not null then
      raise exception 'no ticket type sells %', localplus_private.seat_names(
        array(select s from unnest(v_seats, v_types) as u (s, t) where t is null))
        using errcode = 'P0001', hint = 'INVALID_ORDER';
    end if;
    if p_occurrence is null and exists (
         select 1 from public.ticket_types t join public.ticket_types other
             on other.event_id = t.event_id and other.seat_category = t.seat_category and other.id <> t.id
          where t.id = any (v_types)) then
      raise exception 'several ticket types sell those seats (one per occurrence): name the occurrence_id'
        using errcode = 'P0001', hint = 'INVALID_ORDER';
    end if;
    if (select count(distinct coalesce(t.occurrence_id, t.event_id)) from public.ticket_types t
         where t.id = any (v_types)) > 1 then
      raise exception 'one order holds seats of one occurrence' using errcode = 'P0001', hint = 'INVALID_ORDER';
    end if;
    select coalesce(t.occurrence_id, t.event_id) into v_key from public.ticket_types t where t.id = v_types[1];
  end if;

  -- The same checks as reserve_order's, for each ticket type the seats are sold by.
  for v_type in
    select t.*, e.status as event_status, coalesce(oc.ends_at, e.ends_at) as admits_until,
           coalesce(oc.status, 'scheduled') as occurrence_status,
           case when p_best_type is not null then p_quantity
                else (select count(*) from unnest(v_types) as w where w = t.id) end::integer as wanted
      from public.ticket_types t
      join public.events e on e.id = t.event_id
      left join public.event_occurrences oc on oc.id = t.occurrence_id
     where t.id = any (v_types)
     order by t.id
  loop
    if v_currency is null then
      v_currency := v_type.currency;
      v_occurrence := v_type.occurrence_id;
    elsif v_currency <> v_type.currency then
      raise exception 'one order is paid in one currency' using errcode = 'P0001', hint = 'INVALID_ORDER';
    end if;
    if v_type.event_status <> 'published' or v_type.occurrence_status <> 'scheduled' or v_type.admits_until <= now()
       or (v_type.sales_starts_at is not null and v_type.sales_starts_at > now())
       or (v_type.sales_ends_at is not null and v_type.sales_ends_at <= now()) then
      raise exception '% is not on sale now', v_type.name using errcode = 'P0001', hint = 'SALES_CLOSED';
    end if;
    if v_type.wanted < v_type.min_per_order or v_type.wanted + (
         select count(*) from public.seat_claims c join public.orders o on o.id = c.order_id
          where c.ticket_type_id = v_type.id and o.buyer_id = p_buyer and localplus_private.seat_claim_live(c.during)
       ) > v_type.max_per_order then
      raise exception 'between % and % seats of % per buyer', v_type.min_per_order, v_type.max_per_order,
        v_type.name using errcode = 'P0001', hint = 'LIMIT_EXCEEDED';
    end if;
  end loop;

  loop
    v_attempt := v_attempt + 1;
    if p_best_type is not null then
      v_seats := localplus_private.best_seats(p_event, v_key, v_category, p_quantity);
      if v_seats is null then
        raise exception 'no % adjacent seats of % are left', p_quantity, v_type.name
          using errcode = 'LP409', hint = 'SOLD_OUT';
      end if;
      v_types := array_fill(p_best_type, array[p_quantity]);
    end if;
    begin
      insert into public.orders (event_id, occurrence_id, buyer_id, request_id, currency, total_minor, expires_at)
      select p_event, v_occurrence, p_buyer, p_request_id, v_currency, sum(t.price_minor), v_expires
        from unnest(v_types) as w (type_id) join public.ticket_types t on t.id = w.type_id
      returning id into v_order;
      -- In seat order, so two orders claiming overlapping seats wait for each other without deadlock.
      insert into public.seat_claims (seat_id, occurrence_key, kind, order_id, ticket_type_id, during)
      select w.seat_id, v_key, 'held', v_order, w.type_id, tstzrange(clock_timestamp(), v_expires)
        from unnest(v_seats, v_types) as w (seat_id, type_id) order by w.seat_id;
      insert into public.order_items (order_id, ticket_type_id, quantity, unit_price_minor)
      select v_order, t.id, count(*), t.price_minor
        from unnest(v_types) as w (type_id) join public.ticket_types t on t.id = w.type_id
       group by t.id, t.price_minor;
      return v_order;
    exception when exclusion_violation then
      -- Taken by someone else: chosen seats are all or none; best-available picks again.
      if p_best_type is null or v_attempt >= 5 then
        select array_agg(c.seat_id) into v_taken from public.seat_claims c
         where c.seat_id = any (v_seats) and c.occurrence_key = v_key and localplus_private.seat_claim_live(c.during);
        raise exception 'these seats are taken: %', coalesce(localplus_private.seat_names(v_taken),
                                                            localplus_private.seat_names(v_seats))
          using errcode = 'LP409', hint = 'SEAT_UNAVAILABLE';
      end if;
    end;
  end loop;
end
$$;

-- Before an order is paid: its held seats become sold. False when a seat was taken by someone else
-- after the order's hold expired (the payment is then refunded, as for a sold-out ticket).
create or replace function localplus_private.sell_seats(p_order_id uuid) returns boolean
  language plpgsql security definer
  set search_path = ''
  as $$
declare
  v_status text;
begin
  select status into v_status from public.orders where id = p_order_id for update;
  if v_status is null or v_status not in ('reserved', 'awaiting_payment') then
    return true;
  end if;
  update public.seat_claims set kind = 'sold', during = tstzrange(lower(during), null)
   where order_id = p_order_id and kind = 'held';
  return true;
exception when exclusion_violation then
  return false;
end
$$;

-- After an order is paid: each of its tickets names one of its seats (copied onto the ticket).
create or replace function localplus_private.seat_tickets(p_order_id uuid) returns void
  language sql security definer
  set search_path = ''
  as $$
    update public.tickets t
       set seat_id = s.seat_id, seat_zone = s.zone, seat_row = s.row_name, seat_number = s.number
      from (select c.seat_id, c.ticket_type_id, ps.zone, ps.row_name, ps.number,
                   row_number() over (partition by c.ticket_type_id order by ps.zone_rank, ps.row_rank, ps.seat_rank)
                     as position
              from public.seat_claims c join public.event_seats es on es.id = c.seat_id
              join public.plan_seats ps on ps.id = es.plan_seat_id
             where c.order_id = p_order_id and c.kind = 'sold') s,
           (select id, ticket_type_id, row_number() over (partition by ticket_type_id order by id) as position
              from public.tickets where order_id = p_order_id and seat_id is null) n
     where t.id = n.id and n.ticket_type_id = s.ticket_type_id and n.position = s.position
  $$;

-- Editors block seats (house seats, companions of wheelchair places) and unblock them. Blocking a
-- held or sold seat is a 409 naming it; blocking a blocked seat changes nothing.
create or replace function localplus_private.block_seats(p_event uuid, p_occurrence_key uuid, p_seats uuid[],
                                                         p_block boolean)
  returns void
  language plpgsql security definer
  set search_path = ''
  as $$
declare
  v_taken uuid[];
begin
  if (select count(*) from public.event_seats where id = any (p_seats) and event_id = p_event)
     <> cardinality(array(select distinct unnest(p_seats))) then
    raise exception 'some of those seats are not this event''s' using errcode = 'P0001', hint = 'INVALID_ARGUMENT';
  end if;
  if not p_block then
    update public.seat_claims set during = tstzrange(lower(during), greatest(lower(during), least(upper(during), now())))
     where seat_id = any (p_seats) and occurrence_key = p_occurrence_key and kind = 'blocked'
       and localplus_private.seat_claim_live(during);
    return;
  end if;
  insert into public.seat_claims (seat_id, occurrence_key, kind, during)
  select s.id, p_occurrence_key, 'blocked', tstzrange(clock_timestamp(), null)
    from (select distinct unnest(p_seats) as id) s
   where not exists (select 1 from public.seat_claims c where c.seat_id = s.id and c.occurrence_key = p_occurrence_key
                        and c.kind = 'blocked' and localplus_private.seat_claim_live(c.during))
   order by s.id;
exception when exclusion_violation then
  select array_agg(c.seat_id) into v_taken from public.seat_claims c
   where c.seat_id = any (p_seats) and c.occurrence_key = p_occurrence_key and c.kind <> 'blocked'
     and localplus_private.seat_claim_live(c.during);
  raise exception 'these seats are held or sold: %', localplus_private.seat_names(v_taken)
    using errcode = 'LP409', hint = 'SEAT_UNAVAILABLE';
end
$$;

-- Change a plan's name, seats and general-admission areas. Seats are matched by zone, row and
-- number: new ones are added to every event using the plan, missing ones removed, the rest moved or
-- recategorised; removing or recategorising a seat with a live hold or sale (any event using the
-- plan) is a 409 naming the seats. Seat rows are locked first, so no hold slips in meanwhile.
create or replace function localplus_private.update_seating_plan(p_plan uuid, p_name text, p_zones jsonb,
                                                                 p_general_admission jsonb)
  returns void
  language plpgsql security definer
  set search_path = ''
  as $$
declare
  v_busy uuid[];
begin
  perform 1 from public.seating_plans where id = p_plan for update;
  if p_zones is not null then
    -- Seats that go or change category: locked, then they must have no live hold or sale.
    perform 1 from public.plan_seats ps
     where ps.plan_id = p_plan and not exists (
             select 1 from localplus_private.plan_seats_of(p_zones) n
              where (n.zone, n.row_name, n.number, n.category) = (ps.zone, ps.row_name, ps.number, ps.category))
     order by ps.id
       for update;
    select array_agg(distinct c.seat_id) into v_busy
      from public.plan_seats ps join public.event_seats es on es.plan_seat_id = ps.id
      join public.seat_claims c on c.seat_id = es.id
     where ps.plan_id = p_plan and c.kind <> 'blocked' and localplus_private.seat_claim_live(c.during)
       and not exists (select 1 from localplus_private.plan_seats_of(p_zones) n
                        where (n.zone, n.row_name, n.number, n.category) = (ps.zone, ps.row_name, ps.number, ps.category));
    if v_busy is not null then
      raise exception 'these seats are held or sold, so they cannot be removed or change category: %',
        localplus_private.seat_names(v_busy) using errcode = 'LP409', hint = 'SEATS_IN_USE';
    end if;
    delete from public.plan_seats ps
     where ps.plan_id = p_plan and not exists (
             select 1 from localplus_private.plan_seats_of(p_zones) n
              where (n.zone, n.row_name, n.number) = (ps.zone, ps.row_name, ps.number));
    update public.plan_seats ps
       set x = n.x, y = n.y, category = n.category, accessible = n.accessible,
           zone_rank = n.zone_rank, row_rank = n.row_rank, seat_rank = n.seat_rank
      from localplus_private.plan_seats_of(p_zones) n
     where ps.plan_id = p_plan and (n.zone, n.row_name, n.number) = (ps.zone, ps.row_name, ps.number);
    with added as (
      insert into public.plan_seats (plan_id, zone, row_name, number, x, y, category, accessible, zone_rank,
                                     row_rank, seat_rank)
      select p_plan, n.* from localplus_private.plan_seats_of(p_zones) n
       where not exists (select 1 from public.plan_seats ps
                          where ps.plan_id = p_plan and (n.zone, n.row_name, n.number) = (ps.zone, ps.row_name, ps.number))
      returning id
    )
    insert into public.event_seats (event_id, plan_seat_id)
    select e.id, a.id from added a cross join public.events e where e.seating_plan_id = p_plan;
  end if;
  update public.seating_plans
     set name = coalesce(p_name, name), general_admission = coalesce(p_general_admission, general_admission),
         updated_at = now()
   where id = p_plan;
  -- Seated ticket types count their inventory from the plan again.
  update public.ticket_types t set updated_at = now()
    from public.events e where e.seating_plan_id = p_plan and t.event_id = e.id and t.seat_category is not null;
end
$$;

create or replace function localplus_private.create_seating_plan(p_venue uuid, p_name text, p_zones jsonb,
                                                                 p_general_admission jsonb, p_created_by uuid)
  returns uuid
  language plpgsql security definer
  set search_path = ''
  as $$
declare
  v_plan uuid;
begin
  insert into public.seating_plans (venue_id, name, general_admission, created_by)
  values (p_venue, p_name, p_general_admission, p_created_by)
  returning id into v_plan;
  insert into public.plan_seats (plan_id, zone, row_name, number, x, y, category, accessible, zone_rank, row_rank,
                                 seat_rank)
  select v_plan, s.* from localplus_private.plan_seats_of(p_zones) s;
  return v_plan;
end
$$;

-- Row-level security: plans are public (a venue's layout); editors of a venue's business manage
-- them through the server. An event's seats are seen with the event; a seat's claims only as part of
-- an order one may see (one's own, or of an event one edits): the API answers a seat's status, never
-- who holds or bought it. Only the server writes any of it.
alter table public.seating_plans enable row level security;
alter table public.plan_seats enable row level security;
alter table public.event_seats enable row level security;
alter table public.seat_claims enable row level security;

drop policy if exists seating_plans_read on public.seating_plans;
create policy seating_plans_read on public.seating_plans for select to anon, authenticated using (true);
drop policy if exists plan_seats_read on public.plan_seats;
create policy plan_seats_read on public.plan_seats for select to anon, authenticated using (true);
drop policy if exists event_seats_read on public.event_seats;
create policy event_seats_read on public.event_seats for select to anon, authenticated
  using (exists (select 1 from public.events e where e.id = event_id));
drop policy if exists seat_claims_read on public.seat_claims;
create policy seat_claims_read on public.seat_claims for select to authenticated
  using (order_id is not null and exists (select 1 from public.orders o where o.id = order_id));

revoke all on public.seating_plans, public.plan_seats, public.event_seats, public.seat_claims
  from public, anon, authenticated;
revoke all on sequence public.seat_claims_id_seq from public, anon, authenticated;
grant select on public.seating_plans, public.plan_seats, public.event_seats to anon, authenticated;
grant select on public.seat_claims to authenticated;
grant all on public.seating_plans, public.plan_seats, public.event_seats, public.seat_claims to service_role;
grant usage on sequence public.seat_claims_id_seq to service_role;
-- Editors choose the event's plan like its venue (the trigger holds it to the venue's plans);
-- ticket types name the category they sell.
grant insert (seating_plan_id), update (seating_plan_id) on public.events to authenticated;
grant insert (seat_category), update (seat_category) on public.ticket_types to authenticated;

revoke all on function
  localplus_private.seat_claim_live(tstzrange),
  localplus_private.seat_names(uuid[]),
  localplus_private.plan_seats_of(jsonb),
  localplus_private.seat_category_inventory(uuid, text),
  localplus_private.ticket_types_seat_category(),
  localplus_private.events_seating_plan(),
  localplus_private.order_items_need_seats(),
  localplus_private.release_seats(),
  localplus_private.best_seats(uuid, uuid, text, integer),
  localplus_private.reserve_seats(uuid, text, uuid, uuid, uuid[], uuid, integer, interval),
  localplus_private.sell_seats(uuid),
  localplus_private.seat_tickets(uuid),
  localplus_private.block_seats(uuid, uuid, uuid[], boolean),
  localplus_private.update_seating_plan(uuid, text, jsonb, jsonb),
  localplus_private.create_seating_plan(uuid, text, jsonb, jsonb, uuid)
  from public, anon, authenticated, service_role;
grant execute on function
  localplus_private.seat_claim_live(tstzrange),
  localplus_private.seat_names(uuid[]),
  localplus_private.plan_seats_of(jsonb),
  localplus_private.seat_category_inventory(uuid, text),
  localplus_private.best_seats(uuid, uuid, text, integer),
  localplus_private.reserve_seats(uuid, text, uuid, uuid, uuid[], uuid, integer, interval),
  localplus_private.sell_seats(uuid),
  localplus_private.seat_tickets(uuid),
  localplus_private.block_seats(uuid, uuid, uuid[], boolean),
  localplus_private.update_seating_plan(uuid, text, jsonb, jsonb),
  localplus_private.create_seating_plan(uuid, text, jsonb, jsonb, uuid)
  to service_role;
