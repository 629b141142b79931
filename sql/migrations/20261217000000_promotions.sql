-- Phase 5: promotions (boosted placements). A business pays a budget up front (Stripe) for its
-- published public event to be served as a sponsored result in search and browse lists; admins
-- approve or reject each one, every decision in an append-only log.
--
-- Spend is counted in thousandths of a minor unit (`_milli`): a CPM impression costs `bid_minor`
-- milli. It never passes the budget: servers lease allowance from the promotion's row
-- (`reserved_milli`, guarded here by `lease_promotion`, never above the paced cap) and serve
-- impressions out of their lease without touching the row, then record impressions in batches
-- (`promotion_impressions`, one row per flush): no hot row per impression. A CPC click reserves and
-- spends its bid in one guarded update. spent_milli <= reserved_milli <= budget_minor * 1000.

create table if not exists public.promotions (
  id uuid primary key default gen_random_uuid(),
  event_id uuid not null references public.events (id) on delete cascade,
  business_id uuid not null references public.businesses (id) on delete cascade,
  placements text[] not null
    check (cardinality(placements) between 1 and 2 and placements <@ array['search', 'browse']),
  cities text[] not null default '{}' check (cardinality(cities) <= 50),
  categories text[] not null default '{}' check (cardinality(categories) <= 50),
  starts_at timestamptz not null,
  ends_at timestamptz not null,
  budget_minor bigint not null check (budget_minor between 1 and 100000000000),
  currency text not null check (currency ~ '^[A-Z]{3}$'),
  bid_type text not null check (bid_type in ('cpc', 'cpm')),
  bid_minor bigint not null check (bid_minor between 1 and 100000000),
  status text not null default 'draft'
    check (status in ('draft', 'awaiting_payment', 'pending_review', 'active', 'rejected', 'ended', 'cancelled')),
  reject_reason text check (char_length(reject_reason) <= 1000),
  reserved_milli bigint not null default 0 check (reserved_milli >= 0),
  spent_milli bigint not null default 0 check (spent_milli >= 0),
  payment_intent_id text unique,
  client_secret text,
  paid_minor bigint not null default 0 check (paid_minor >= 0),
  refunded_minor bigint not null default 0 check (refunded_minor >= 0),
  -- pending: a refund recorded and not yet confirmed sent to Stripe (sent after commit, retried).
  refund_status text check (refund_status in ('pending', 'succeeded')),
  stripe_refund_id text,
  closed_at timestamptz,
  created_by uuid,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  constraint promotions_dates_check check (ends_at > starts_at),
  constraint promotions_spend_check check (spent_milli <= reserved_milli and reserved_milli <= budget_minor * 1000)
);

create index if not exists promotions_business_idx on public.promotions (business_id, created_at desc, id);
create index if not exists promotions_review_idx on public.promotions (updated_at, id) where status = 'pending_review';
create index if not exists promotions_live_idx on public.promotions (ends_at) where status = 'active';

create table if not exists public.promotion_moderation_log (
  id bigint generated always as identity primary key,
  promotion_id uuid not null references public.promotions (id) on delete cascade,
  actor_id uuid,
  from_status text not null,
  to_status text not null,
  reason text,
  created_at timestamptz not null default now()
);

create index if not exists promotion_moderation_log_idx on public.promotion_moderation_log (promotion_id, id);

-- One row per server flush: how many impressions of a promotion it served that day, and their cost.
create table if not exists public.promotion_impressions (
  id bigint generated always as identity primary key,
  promotion_id uuid not null references public.promotions (id) on delete cascade,
  day date not null,
  impressions integer not null check (impressions > 0),
  spent_milli bigint not null check (spent_milli >= 0),
  created_at timestamptz not null default now()
);

create index if not exists promotion_impressions_idx on public.promotion_impressions (promotion_id, day);

-- One row per counted click: a viewer counts once a day.
create table if not exists public.promotion_clicks (
  promotion_id uuid not null references public.promotions (id) on delete cascade,
  viewer text not null check (char_length(viewer) between 1 and 200),
  day date not null,
  spent_milli bigint not null check (spent_milli >= 0),
  created_at timestamptz not null default now(),
  primary key (promotion_id, day, viewer)
);

-- The allowance a promotion may have spent by now: its budget spread evenly over its days (UTC days
-- from starts_at), so that by the end of day d of n, at most d/n of the budget is out.
create or replace function localplus_private.promotion_paced_cap_milli(p_budget bigint, p_starts timestamptz,
                                                                       p_ends timestamptz)
  returns bigint
  language sql stable
  set search_path = ''
  as $$
    select least(p_budget * 1000, (p_budget * 1000 * d.today / d.total)::bigint)
      from (select greatest(1, ceil(extract(epoch from p_ends - p_starts) / 86400))::numeric as total,
                   greatest(1, floor(extract(epoch from pg_catalog.now() - p_starts) / 86400) + 1)::numeric as today) d
  $$;

-- Grant a server up to p_want milli of allowance for impressions of an active promotion; answers what
-- was granted (0 when nothing is left today). The row lock serialises concurrent leases: the sum of
-- all grants never passes the paced cap.
create or replace function localplus_private.lease_promotion(p_promotion uuid, p_want bigint) returns bigint
  language plpgsql security definer
  set search_path = ''
  as $$
declare
  v_granted bigint;
begin
  update public.promotions p
     set reserved_milli = p.reserved_milli + g.amount
    from (select id, greatest(0, least(p_want, localplus_private.promotion_paced_cap_milli(budget_minor, starts_at, ends_at)
                                              - reserved_milli)) as amount
            from public.promotions
           where id = p_promotion and status = 'active' and pg_catalog.now() >= starts_at and pg_catalog.now() < ends_at
             for update) g
   where p.id = g.id
  returning g.amount into v_granted;
  return coalesce(v_granted, 0);
end
$$;

-- A server gives back the allowance it leased and did not spend.
create or replace function localplus_private.release_promotion_lease(p_promotion uuid, p_unused bigint) returns void
  language sql security definer
  set search_path = ''
  as $$
    update public.promotions set reserved_milli = greatest(spent_milli, reserved_milli - greatest(0, p_unused))
     where id = p_promotion
  $$;

-- A server's batch of impressions (parallel arrays): one raw row each, their cost added to the spend
-- they were leased for. Once a promotion is closed (cancelled, ended, rejected) its spend is final
-- (its refund was computed from it): impressions served in the moment before a server noticed are
-- counted but cost nothing.
create or replace function localplus_private.record_promotion_impressions(p_promotions uuid[], p_days date[],
                                                                          p_counts integer[], p_costs bigint[])
  returns void
  language plpgsql security definer
  set search_path = ''
  as $$
begin
  with batch as (
    select b.promotion_id, b.day, b.impressions,
           case when p.status = 'active' then least(b.cost, p.reserved_milli - p.spent_milli) else 0 end as cost
      from unnest(p_promotions, p_days, p_counts, p_costs) as b (promotion_id, day, impressions, cost)
      join public.promotions p on p.id = b.promotion_id
     where b.impressions > 0
  ),
  recorded as (
    insert into public.promotion_impressions (promotion_id, day, impressions, spent_milli)
    select promotion_id, day, impressions, cost from batch
    returning promotion_id, spent_milli
  )
  update public.promotions p set spent_milli = p.spent_milli + r.cost
    from (select promotion_id, sum(spent_milli)::bigint as cost from recorded group by promotion_id) r
   where p.id = r.promotion_id and r.cost > 0;
end
$$;

-- A click by `p_viewer` (never the business's own team: the caller checks). Counted once per viewer
-- per UTC day; a CPC promotion pays its bid if that much allowance is left (the guarded update).
-- Answers whether it was counted.
create or replace function localplus_private.record_promotion_click(p_promotion uuid, p_viewer text)
  returns boolean
  language plpgsql security definer
  set search_path = ''
  as $$
declare
  v_promotion public.promotions;
  v_cost bigint := 0;
begin
  select * into v_promotion from public.promotions where id = p_promotion;
  if v_promotion.id is null or v_promotion.status <> 'active' or pg_catalog.now() < v_promotion.starts_at
     or pg_catalog.now() >= v_promotion.ends_at then
    return false;
  end if;
  if exists (select 1 from public.promotion_clicks
              where promotion_id = p_promotion and day = (pg_catalog.now() at time zone 'UTC')::date and viewer = p_viewer) then
    return false;
  end if;
  if v_promotion.bid_type = 'cpc' then
    v_cost := v_promotion.bid_minor * 1000;
    update public.promotions
       set reserved_milli = reserved_milli + v_cost, spent_milli = spent_milli + v_cost
     where id = p_promotion and status = 'active'
       and reserved_milli + v_cost <= localplus_private.promotion_paced_cap_milli(budget_minor, starts_at, ends_at);
    if not found then
      return false;
    end if;
  end if;
  insert into public.promotion_clicks (promotion_id, viewer, day, spent_milli)
  values (p_promotion, p_viewer, (pg_catalog.now() at time zone 'UTC')::date, v_cost)
  on conflict do nothing;
  if not found and v_cost > 0 then
    -- A concurrent click of the same viewer won: this one costs nothing.
    update public.promotions
       set reserved_milli = reserved_milli - v_cost, spent_milli = spent_milli - v_cost where id = p_promotion;
    return false;
  end if;
  return found;
end
$$;

-- Close a promotion (cancelled, ended, rejected) and record the refund of what is unspent of its paid
-- budget (whole units, rounded in the business's favour never: spend rounded up). Answers the amount
-- to send to Stripe (0: nothing paid or nothing left). Its spend is final from here on.
create or replace function localplus_private.close_promotion(p_promotion uuid, p_status text, p_reason text)
  returns bigint
  language plpgsql security definer
  set search_path = ''
  as $$
declare
  v_refund bigint;
begin
  update public.promotions
     set status = p_status, reject_reason = coalesce(p_reason, reject_reason), closed_at = pg_catalog.now(),
         refunded_minor = greatest(0, paid_minor - ceil(spent_milli / 1000.0)::bigint),
         refund_status = case when paid_minor - ceil(spent_milli / 1000.0)::bigint > 0 then 'pending' end,
         updated_at = pg_catalog.now()
   where id = p_promotion
  returning refunded_minor into v_refund;
  return coalesce(v_refund, 0);
end
$$;

create or replace function localplus_private.promotions_touch() returns trigger
  language plpgsql
  set search_path = ''
  as $$
begin
  new.updated_at := pg_catalog.now();
  return new;
end
$$;

drop trigger if exists promotions_touch on public.promotions;
create trigger promotions_touch before update on public.promotions
  for each row execute function localplus_private.promotions_touch();

-- Every status change in the log, whoever makes it (the request's user, null for the server).
create or replace function localplus_private.promotions_log_status() returns trigger
  language plpgsql security definer
  set search_path = ''
  as $$
begin
  if tg_op = 'UPDATE' and new.status is distinct from old.status then
    insert into public.promotion_moderation_log (promotion_id, actor_id, from_status, to_status, reason)
    values (new.id, (select auth.uid()), old.status, new.status,
            case when new.status = 'rejected' then new.reject_reason end);
  end if;
  return null;
end
$$;

drop trigger if exists promotions_log_status on public.promotions;
create trigger promotions_log_status after update of status on public.promotions
  for each row execute function localplus_private.promotions_log_status();

create or replace function localplus_private.promotion_log_append_only() returns trigger
  language plpgsql
  set search_path = ''
  as $$
begin
  raise exception 'the promotion moderation log is append-only' using errcode = '42501';
end
$$;

drop trigger if exists promotion_moderation_log_append_only on public.promotion_moderation_log;
create trigger promotion_moderation_log_append_only before update or delete on public.promotion_moderation_log
  for each row execute function localplus_private.promotion_log_append_only();

-- Row-level security: partners see only their businesses' promotions (admins all); owners and
-- editors create them for their business's published public events and change them while drafts.
-- Status, spend, payment and refund columns are the server's: no API role may write them, and the
-- impressions, clicks and log are written by the server alone.
alter table public.promotions enable row level security;
alter table public.promotion_moderation_log enable row level security;
alter table public.promotion_impressions enable row level security;
alter table public.promotion_clicks enable row level security;

drop policy if exists promotions_read on public.promotions;
create policy promotions_read on public.promotions for select to authenticated
  using (localplus_private.is_platform_admin()
         or localplus_private.is_business_partner(business_id, array['owner', 'editor', 'viewer']));
drop policy if exists promotions_create on public.promotions;
create policy promotions_create on public.promotions for insert to authenticated
  with check (
    status = 'draft' and created_by = (select auth.uid())
    and (localplus_private.is_platform_admin() or localplus_private.is_business_partner(business_id, array['owner', 'editor']))
    and exists (select 1 from public.events e
                 where e.id = event_id and e.business_id = promotions.business_id
                   and e.status = 'published' and e.visibility = 'public')
  );
drop policy if exists promotions_update on public.promotions;
create policy promotions_update on public.promotions for update to authenticated
  using (status = 'draft'
         and (localplus_private.is_platform_admin() or localplus_private.is_business_partner(business_id, array['owner', 'editor'])))
  with check (status = 'draft');
drop policy if exists promotion_log_read on public.promotion_moderation_log;
create policy promotion_log_read on public.promotion_moderation_log for select to authenticated
  using (exists (select 1 from public.promotions p where p.id = promotion_id));
drop policy if exists promotion_impressions_read on public.promotion_impressions;
create policy promotion_impressions_read on public.promotion_impressions for select to authenticated
  using (exists (select 1 from public.promotions p where p.id = promotion_id));
drop policy if exists promotion_clicks_read on public.promotion_clicks;
create policy promotion_clicks_read on public.promotion_clicks for select to authenticated
  using (exists (select 1 from public.promotions p where p.id = promotion_id));

revoke all on public.promotions, public.promotion_moderation_log, public.promotion_impressions,
  public.promotion_clicks from public, anon, authenticated;
revoke all on sequence public.promotion_moderation_log_id_seq, public.promotion_impressions_id_seq
  from public, anon, authenticated;
-- Partners read everything of their promotions but the payment's client secret (the checkout
-- answer carries it to whoever started it).
grant select (id, event_id, business_id, placements, cities, categories, starts_at, ends_at, budget_minor, currency,
              bid_type, bid_minor, status, reject_reason, reserved_milli, spent_milli, payment_intent_id,
              paid_minor, refunded_minor, refund_status, stripe_refund_id, closed_at, created_by, created_at,
              updated_at)
  on public.promotions to authenticated;
grant insert (event_id, business_id, placements, cities, categories, starts_at, ends_at, budget_minor, currency,
              bid_type, bid_minor, created_by)
  on public.promotions to authenticated;
grant update (placements, cities, categories, starts_at, ends_at, budget_minor, currency, bid_type, bid_minor)
  on public.promotions to authenticated;
grant select on public.promotion_moderation_log, public.promotion_impressions, public.promotion_clicks
  to authenticated;
grant all on public.promotions, public.promotion_moderation_log, public.promotion_impressions,
  public.promotion_clicks to service_role;
grant usage on sequence public.promotion_moderation_log_id_seq, public.promotion_impressions_id_seq
  to service_role;

revoke all on function
  localplus_private.promotion_paced_cap_milli(bigint, timestamptz, timestamptz),
  localplus_private.lease_promotion(uuid, bigint),
  localplus_private.release_promotion_lease(uuid, bigint),
  localplus_private.record_promotion_impressions(uuid[], date[], integer[], bigint[]),
  localplus_private.record_promotion_click(uuid, text),
  localplus_private.close_promotion(uuid, text, text),
  localplus_private.promotions_log_status(),
  localplus_private.promotions_touch(),
  localplus_private.promotion_log_append_only()
  from public, anon, authenticated, service_role;
grant execute on function
  localplus_private.promotion_paced_cap_milli(bigint, timestamptz, timestamptz),
  localplus_private.lease_promotion(uuid, bigint),
  localplus_private.release_promotion_lease(uuid, bigint),
  localplus_private.record_promotion_impressions(uuid[], date[], integer[], bigint[]),
  localplus_private.record_promotion_click(uuid, text),
  localplus_private.close_promotion(uuid, text, text)
  to service_role;
