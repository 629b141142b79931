-- Phase 5: analytics for partners and platform admins. Daily rollups per event, per business and per
-- city and category, kept as things happen: triggers on the raw rows (registrations, saves, paid
-- orders, refunds, check-ins) add to them in the same transaction as the change, so a rollup never
-- misses or repeats a fact, and reads never count raw rows.
--
-- Days: an event's and its business's rows use the event's time zone; the city rows the city's.
-- What counts (the recount in tests/test_analytics.py counts the raw rows the same way):
--   registrations  registrations now going, waitlisted or attended, on the day they were made
--                  (a cancellation takes its registration back off that day);
--   saves          saves that still stand, on the day they were made;
--   orders, tickets, revenue_minor   orders paid (free ones too), their tickets and total, on the day paid;
--   refunds_minor  refunds of paid orders' sales (not of a second payment), on the day recorded;
--   check_ins      tickets checked in, on the day of their (earliest) check-in;
--   views          distinct viewers per event and day (below).
-- An event keeps the business, city and category it had when a fact happened.
--
-- Hot rows: every rollup row is split in SHARDS by the writing backend (pg_backend_pid() % 8), so
-- concurrent transactions (one per pool connection) seldom queue on one row, as a rush's payments
-- would on a single (event, day) row; readers sum the shards. The fold job moves the shards of past
-- days back into shard 0, so history costs one row per day.
--
-- Views are batched: POST /api/events/{id}:view inserts one row per viewer, event and day into
-- `event_views` (its primary key drops repeats), and the events service's fold job adds the rows not
-- yet counted to the rollups (`fold_views`), many views per rollup row update, so a popular event's
-- views never line up on one row. Rows of past days are pruned once counted.
--
-- Only the server writes any of it; partners read their events' and businesses' rollups, platform
-- admins all of them (row-level security, also through Supabase's REST).

create table if not exists public.analytics_event_days (
  event_id uuid not null references public.events (id) on delete cascade,
  day date not null,
  -- The orders' currency for money figures; '' on rows without money.
  currency text not null default '',
  shard smallint not null default 0,
  views integer not null default 0,
  saves integer not null default 0,
  registrations integer not null default 0,
  orders integer not null default 0,
  tickets integer not null default 0,
  revenue_minor bigint not null default 0,
  refunds_minor bigint not null default 0,
  check_ins integer not null default 0,
  primary key (event_id, day, currency, shard)
);

create table if not exists public.analytics_business_days (
  business_id uuid not null references public.businesses (id) on delete cascade,
  day date not null,
  currency text not null default '',
  shard smallint not null default 0,
  views integer not null default 0,
  saves integer not null default 0,
  registrations integer not null default 0,
  orders integer not null default 0,
  tickets integer not null default 0,
  revenue_minor bigint not null default 0,
  refunds_minor bigint not null default 0,
  check_ins integer not null default 0,
  primary key (business_id, day, currency, shard)
);

create table if not exists public.analytics_city_days (
  -- Null for events in no city (none today: every event gets one).
  city_id uuid references public.cities (id) on delete cascade,
  category text not null,
  day date not null,
  currency text not null default '',
  shard smallint not null default 0,
  views integer not null default 0,
  saves integer not null default 0,
  registrations integer not null default 0,
  orders integer not null default 0,
  tickets integer not null default 0,
  revenue_minor bigint not null default 0,
  refunds_minor bigint not null default 0,
  check_ins integer not null default 0
);

create unique index if not exists analytics_city_days_key
  on public.analytics_city_days (city_id, category, day, currency, shard) nulls not distinct;
-- "All cities, one category" and "everything" read by day.
create index if not exists analytics_city_days_day_idx on public.analytics_city_days (day, category);
-- What the fold job compacts.
create index if not exists analytics_event_days_sharded_idx on public.analytics_event_days (day) where shard <> 0;
create index if not exists analytics_business_days_sharded_idx on public.analytics_business_days (day) where shard <> 0;
create index if not exists analytics_city_days_sharded_idx on public.analytics_city_days (day) where shard <> 0;

-- One row per viewer, event and day (the event's time zone): `viewer` is `u:<user id>` for a signed-in
-- caller, `a:<hash>` for an anonymous one (see the events service's analytics module).
create table if not exists public.event_views (
  event_id uuid not null references public.events (id) on delete cascade,
  day date not null,
  viewer text not null check (char_length(viewer) <= 100),
  viewed_at timestamptz not null default now(),
  counted boolean not null default false,
  primary key (event_id, day, viewer)
);

create index if not exists event_views_uncounted_idx on public.event_views (viewed_at) where not counted;

-- Adds figures to the three rollups of one event at one moment.
create or replace function localplus_private.analytics_add(p_event_id uuid, p_at timestamptz, p_currency text,
    p_views integer, p_saves integer, p_registrations integer, p_orders integer, p_tickets integer,
    p_revenue_minor bigint, p_refunds_minor bigint, p_check_ins integer)
  returns void
  language plpgsql security definer
  set search_path = ''
  as $$
declare
  v_event record;
  v_shard smallint := pg_backend_pid() % 8;
begin
  select e.business_id, e.city_id, e.category, e.timezone, coalesce(c.timezone, e.timezone) as city_timezone
    into v_event
    from public.events e left join public.cities c on c.id = e.city_id
   where e.id = p_event_id;
  if not found then
    return;  -- the event is being deleted (its rollups go with it)
  end if;
  insert into public.analytics_event_days as d (event_id, day, currency, shard, views, saves, registrations,
      orders, tickets, revenue_minor, refunds_minor, check_ins)
  values (p_event_id, (p_at at time zone v_event.timezone)::date, p_currency, v_shard, p_views, p_saves,
      p_registrations, p_orders, p_tickets, p_revenue_minor, p_refunds_minor, p_check_ins)
  on conflict (event_id, day, currency, shard) do update set
    views = d.views + excluded.views, saves = d.saves + excluded.saves,
    registrations = d.registrations + excluded.registrations, orders = d.orders + excluded.orders,
    tickets = d.tickets + excluded.tickets, revenue_minor = d.revenue_minor + excluded.revenue_minor,
    refunds_minor = d.refunds_minor + excluded.refunds_minor, check_ins = d.check_ins + excluded.check_ins;
  if v_event.business_id is not null then
    insert into public.analytics_business_days as d (business_id, day, currency, shard, views, saves,
        registrations, orders, tickets, revenue_minor, refunds_minor, check_ins)
    values (v_event.business_id, (p_at at time zone v_event.timezone)::date, p_currency, v_shard, p_views,
        p_saves, p_registrations, p_orders, p_tickets, p_revenue_minor, p_refunds_minor, p_check_ins)
    on conflict (business_id, day, currency, shard) do update set
      views = d.views + excluded.views, saves = d.saves + excluded.saves,
      registrations = d.registrations + excluded.registrations, orders = d.orders + excluded.orders,
      tickets = d.tickets + excluded.tickets, revenue_minor = d.revenue_minor + excluded.revenue_minor,
      refunds_minor = d.refunds_minor + excluded.refunds_minor, check_ins = d.check_ins + excluded.check_ins;
  end if;
  insert into public.analytics_city_days as d (city_id, category, day, currency, shard, views, saves,
      registrations, orders, tickets, revenue_minor, refunds_minor, check_ins)
  values (v_event.city_id, v_event.category, (p_at at time zone v_event.city_timezone)::date, p_currency, v_shard,
      p_views, p_saves, p_registrations, p_orders, p_tickets, p_revenue_minor, p_refunds_minor, p_check_ins)
  on conflict (city_id, category, day, currency, shard) do update set
    views = d.views + excluded.views, saves = d.saves + excluded.saves,
    registrations = d.registrations + excluded.registrations, orders = d.orders + excluded.orders,
    tickets = d.tickets + excluded.tickets, revenue_minor = d.revenue_minor + excluded.revenue_minor,
    refunds_minor = d.refunds_minor + excluded.refunds_minor, check_ins = d.check_ins + excluded.check_ins;
end
$$;

create or replace function localplus_private.analytics_participants() returns trigger
  language plpgsql security definer
  set search_path = ''
  as $$
declare
  v_old integer := case when tg_op <> 'INSERT' and old.status in ('going', 'waitlisted', 'attended') then 1 else 0 end;
  v_new integer := case when tg_op <> 'DELETE' and new.status in ('going', 'waitlisted', 'attended') then 1 else 0 end;
begin
  if tg_op = 'UPDATE' and v_old = v_new and old.created_at = new.created_at then
    return null;
  end if;
  if v_old = 1 then
    perform localplus_private.analytics_add(old.event_id, old.created_at, '', 0, 0, -1, 0, 0, 0, 0, 0);
  end if;
  if v_new = 1 then
    perform localplus_private.analytics_add(new.event_id, new.created_at, '', 0, 0, 1, 0, 0, 0, 0, 0);
  end if;
  return null;
end
$$;

drop trigger if exists analytics_participants on public.event_participants;
create trigger analytics_participants after insert or update of status, created_at or delete
  on public.event_participants for each row execute function localplus_private.analytics_participants();

create or replace function localplus_private.analytics_saves() returns trigger
  language plpgsql security definer
  set search_path = ''
  as $$
begin
  if tg_op = 'INSERT' then
    perform localplus_private.analytics_add(new.event_id, new.created_at, '', 0, 1, 0, 0, 0, 0, 0, 0);
  else
    perform localplus_private.analytics_add(old.event_id, old.created_at, '', 0, -1, 0, 0, 0, 0, 0, 0);
  end if;
  return null;
end
$$;

drop trigger if exists analytics_saves on public.event_saves;
create trigger analytics_saves after insert or delete on public.event_saves
  for each row execute function localplus_private.analytics_saves();

-- An order counts once, when it becomes paid (paid_at is set once and never cleared).
create or replace function localplus_private.analytics_orders() returns trigger
  language plpgsql security definer
  set search_path = ''
  as $$
begin
  if new.paid_at is not null and (tg_op = 'INSERT' or old.paid_at is null) then
    perform localplus_private.analytics_add(new.event_id, new.paid_at, new.currency, 0, 0, 0, 1,
      (select coalesce(sum(i.quantity), 0)::integer from public.order_items i where i.order_id = new.id),
      new.total_minor, 0, 0);
  end if;
  return null;
end
$$;

drop trigger if exists analytics_orders on public.orders;
create trigger analytics_orders after insert or update of paid_at on public.orders
  for each row execute function localplus_private.analytics_orders();

-- A refund of a paid order's sale (a second payment's refund sold nothing, and an unpaid order's
-- refund gives back a payment that never became a sale).
create or replace function localplus_private.analytics_refunds() returns trigger
  language plpgsql security definer
  set search_path = ''
  as $$
declare
  v_order record;
begin
  if new.payment_intent_id is not null then
    return null;
  end if;
  select o.event_id, o.currency, o.paid_at into v_order from public.orders o where o.id = new.order_id;
  if v_order.paid_at is not null then
    perform localplus_private.analytics_add(v_order.event_id, new.created_at, v_order.currency, 0, 0, 0, 0, 0, 0,
      new.amount_minor, 0);
  end if;
  return null;
end
$$;

drop trigger if exists analytics_refunds on public.refunds;
create trigger analytics_refunds after insert on public.refunds
  for each row execute function localplus_private.analytics_refunds();

-- A check-in counts on the day of the ticket's check-in time, which an earlier offline scan may move.
create or replace function localplus_private.analytics_check_ins() returns trigger
  language plpgsql security definer
  set search_path = ''
  as $$
begin
  if tg_op = 'UPDATE' and old.checked_in_at is not distinct from new.checked_in_at then
    return null;
  end if;
  if tg_op = 'UPDATE' and old.checked_in_at is not null then
    perform localplus_private.analytics_add(old.event_id, old.checked_in_at, '', 0, 0, 0, 0, 0, 0, 0, -1);
  end if;
  if new.checked_in_at is not null then
    perform localplus_private.analytics_add(new.event_id, new.checked_in_at, '', 0, 0, 0, 0, 0, 0, 0, 1);
  end if;
  return null;
end
$$;

drop trigger if exists analytics_check_ins on public.tickets;
create trigger analytics_check_ins after insert or update of checked_in_at on public.tickets
  for each row execute function localplus_private.analytics_check_ins();

-- The fold job: up to p_limit uncounted views, oldest first, added to the rollups in groups of one
-- event and quarter hour (every time zone's offset is a whole number of quarter hours, so each group
-- falls on one day in any zone), and marked counted. SKIP LOCKED lets two jobs fold side by side.
create or replace function localplus_private.fold_views(p_limit integer) returns integer
  language plpgsql security definer
  set search_path = ''
  as $$
declare
  v_group record;
  v_total integer := 0;
begin
  for v_group in
    with batch as (
      select event_id, day, viewer from public.event_views
       where not counted order by viewed_at limit p_limit for update skip locked
    ), marked as (
      update public.event_views v set counted = true
        from batch b where v.event_id = b.event_id and v.day = b.day and v.viewer = b.viewer
      returning v.event_id, v.viewed_at
    )
    select event_id,
           date_bin('15 minutes', viewed_at, timestamptz '2000-01-01 00:00:00+00') as at,
           count(*)::integer as views
      from marked group by 1, 2 order by 1, 2
  loop
    perform localplus_private.analytics_add(v_group.event_id, v_group.at, '', v_group.views, 0, 0, 0, 0, 0, 0, 0);
    v_total := v_total + v_group.views;
  end loop;
  -- Counted views of days over (in every zone) only served to drop repeats.
  delete from public.event_views where counted and day < (now() at time zone 'UTC')::date - 2;
  return v_total;
end
$$;

-- The fold job too: the shards of days over (in every zone) summed into shard 0.
create or replace function localplus_private.compact_analytics() returns void
  language plpgsql security definer
  set search_path = ''
  as $$
declare
  v_before date := (now() at time zone 'UTC')::date - 2;
begin
  with moved as (
    delete from public.analytics_event_days where shard <> 0 and day < v_before returning *
  )
  insert into public.analytics_event_days as d (event_id, day, currency, shard, views, saves, registrations,
      orders, tickets, revenue_minor, refunds_minor, check_ins)
  select event_id, day, currency, 0, sum(views), sum(saves), sum(registrations), sum(orders), sum(tickets),
         sum(revenue_minor), sum(refunds_minor), sum(check_ins)
    from moved group by event_id, day, currency
  on conflict (event_id, day, currency, shard) do update set
    views = d.views + excluded.views, saves = d.saves + excluded.saves,
    registrations = d.registrations + excluded.registrations, orders = d.orders + excluded.orders,
    tickets = d.tickets + excluded.tickets, revenue_minor = d.revenue_minor + excluded.revenue_minor,
    refunds_minor = d.refunds_minor + excluded.refunds_minor, check_ins = d.check_ins + excluded.check_ins;
  with moved as (
    delete from public.analytics_business_days where shard <> 0 and day < v_before returning *
  )
  insert into public.analytics_business_days as d (business_id, day, currency, shard, views, saves,
      registrations, orders, tickets, revenue_minor, refunds_minor, check_ins)
  select business_id, day, currency, 0, sum(views), sum(saves), sum(registrations), sum(orders), sum(tickets),
         sum(revenue_minor), sum(refunds_minor), sum(check_ins)
    from moved group by business_id, day, currency
  on conflict (business_id, day, currency, shard) do update set
    views = d.views + excluded.views, saves = d.saves + excluded.saves,
    registrations = d.registrations + excluded.registrations, orders = d.orders + excluded.orders,
    tickets = d.tickets + excluded.tickets, revenue_minor = d.revenue_minor + excluded.revenue_minor,
    refunds_minor = d.refunds_minor + excluded.refunds_minor, check_ins = d.check_ins + excluded.check_ins;
  with moved as (
    delete from public.analytics_city_days where shard <> 0 and day < v_before returning *
  )
  insert into public.analytics_city_days as d (city_id, category, day, currency, shard, views, saves,
      registrations, orders, tickets, revenue_minor, refunds_minor, check_ins)
  select city_id, category, day, currency, 0, sum(views), sum(saves), sum(registrations), sum(orders),
         sum(tickets), sum(revenue_minor), sum(refunds_minor), sum(check_ins)
    from moved group by city_id, category, day, currency
  on conflict (city_id, category, day, currency, shard) do update set
    views = d.views + excluded.views, saves = d.saves + excluded.saves,
    registrations = d.registrations + excluded.registrations, orders = d.orders + excluded.orders,
    tickets = d.tickets + excluded.tickets, revenue_minor = d.revenue_minor + excluded.revenue_minor,
    refunds_minor = d.refunds_minor + excluded.refunds_minor, check_ins = d.check_ins + excluded.check_ins;
end
$$;

-- Backfill: the facts recorded before this migration, as the triggers would have added them.
do $$
begin
  if exists (select 1 from public.analytics_event_days) or exists (select 1 from public.analytics_city_days) then
    return;
  end if;
  perform localplus_private.analytics_add(p.event_id, p.created_at, '', 0, 0, 1, 0, 0, 0, 0, 0)
     from public.event_participants p where p.status in ('going', 'waitlisted', 'attended');
  perform localplus_private.analytics_add(s.event_id, s.created_at, '', 0, 1, 0, 0, 0, 0, 0, 0)
     from public.event_saves s;
  perform localplus_private.analytics_add(o.event_id, o.paid_at, o.currency, 0, 0, 0, 1,
            (select coalesce(sum(i.quantity), 0)::integer from public.order_items i where i.order_id = o.id),
            o.total_minor, 0, 0)
     from public.orders o where o.paid_at is not null;
  perform localplus_private.analytics_add(o.event_id, r.created_at, o.currency, 0, 0, 0, 0, 0, 0, r.amount_minor, 0)
     from public.refunds r join public.orders o on o.id = r.order_id
    where r.payment_intent_id is null and o.paid_at is not null;
  perform localplus_private.analytics_add(t.event_id, t.checked_in_at, '', 0, 0, 0, 0, 0, 0, 0, 1)
     from public.tickets t where t.checked_in_at is not null;
  perform localplus_private.compact_analytics();
end
$$;

alter table public.analytics_event_days enable row level security;
alter table public.analytics_business_days enable row level security;
alter table public.analytics_city_days enable row level security;
alter table public.event_views enable row level security;

-- The events the caller is a viewer of or more (event_role_rank >= 2, platform admins aside): their
-- own, their businesses', and those of unexpired permissions. Only the caller's own ties.
create or replace function localplus_private.caller_viewer_events() returns setof uuid
  language sql stable security definer
  set search_path = ''
  as $$
    select e.id from public.events e where e.created_by = (select auth.uid())
    union
    select e.id from public.partners p join public.events e on e.business_id = p.business_id
     where p.user_id = (select auth.uid())
    union
    select ep.event_id from public.event_permissions ep
     where ep.user_id = (select auth.uid()) and (ep.expires_at is null or ep.expires_at > now())
  $$;

-- An event's viewers and up (partners of its business, permissions, its creator, admins). The set is
-- made once per statement (an uncorrelated subquery), not ranked per row: a year of one event's rows
-- ranked row by row took three times as long as the rest of the request.
drop policy if exists analytics_event_days_read on public.analytics_event_days;
create policy analytics_event_days_read on public.analytics_event_days for select to authenticated
  using ((select localplus_private.is_platform_admin())
         or event_id in (select localplus_private.caller_viewer_events()));

drop policy if exists analytics_business_days_read on public.analytics_business_days;
create policy analytics_business_days_read on public.analytics_business_days for select to authenticated
  using ((select localplus_private.is_platform_admin())
         or localplus_private.is_business_partner(business_id, array['owner', 'editor', 'viewer']));

drop policy if exists analytics_city_days_read on public.analytics_city_days;
create policy analytics_city_days_read on public.analytics_city_days for select to authenticated
  using ((select localplus_private.is_platform_admin()));

revoke all on public.analytics_event_days, public.analytics_business_days, public.analytics_city_days,
  public.event_views from public, anon, authenticated;
grant select on public.analytics_event_days, public.analytics_business_days, public.analytics_city_days
  to authenticated;
grant all on public.analytics_event_days, public.analytics_business_days, public.analytics_city_days,
  public.event_views to service_role;

revoke all on function localplus_private.caller_viewer_events() from public, anon;
grant execute on function localplus_private.caller_viewer_events() to authenticated, service_role;
revoke all on function
  localplus_private.analytics_add(uuid, timestamptz, text, integer, integer, integer, integer, integer, bigint,
                                  bigint, integer),
  localplus_private.analytics_participants(),
  localplus_private.analytics_saves(),
  localplus_private.analytics_orders(),
  localplus_private.analytics_refunds(),
  localplus_private.analytics_check_ins(),
  localplus_private.fold_views(integer),
  localplus_private.compact_analytics()
  from public, anon, authenticated, service_role;
-- The fold job's, for service_role only.
grant execute on function localplus_private.fold_views(integer), localplus_private.compact_analytics()
  to service_role;
