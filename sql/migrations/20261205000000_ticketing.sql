-- Phase 2: orders that hold tickets for a while, Stripe payments, issued e-tickets, check-in,
-- refunds, and an outbox for what the notifications will send.
--
-- The seed's `event_tickets` are `ticket_types` (Phase 0); its `ticket_sales` are `orders` (a
-- buyer's purchase and its confirmation), their `order_items`, and the `tickets` issued when an
-- order is paid (one per admission, each with its signed QR code). While an order is unpaid its
-- tickets are held in `ticket_holds`; `stripe_events` records every Stripe event processed, so each
-- is processed once; `refunds` and `check_ins` keep what happened; `outbox` holds messages to send.
--
-- Only the server writes any of this (service_role, through the functions below that lock what
-- they count); buyers read their own orders and tickets, the event's editors those of their event.

create table if not exists public.orders (
  id uuid primary key default gen_random_uuid(),
  -- Money records outlive what they were for: an event with orders cannot be deleted (cancel it).
  event_id uuid not null references public.events (id) on delete restrict,
  occurrence_id uuid,
  buyer_id uuid references auth.users (id) on delete set null,
  request_id text not null check (char_length(request_id) between 1 and 100),
  status text not null default 'reserved'
    check (status in ('reserved', 'awaiting_payment', 'paid', 'cancelled', 'expired', 'refunded',
                      'partially_refunded')),
  currency text not null check (currency ~ '^[A-Z]{3}$'),
  total_minor bigint not null check (total_minor >= 0),
  refunded_minor bigint not null default 0,
  expires_at timestamptz not null,
  confirmation_code text unique,
  payment_intent_id text unique,
  checkout_session_id text unique,
  -- Only the buyer may see these two (the API reads them for the buyer; no API role's grant has them).
  client_secret text,
  checkout_url text,
  disputed_at timestamptz,
  paid_at timestamptz,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  constraint orders_refunded_within_total check (refunded_minor between 0 and total_minor),
  constraint orders_request_id_key unique (buyer_id, request_id),
  -- One occurrence of a recurring event, of this event (as its ticket types name it).
  constraint orders_occurrence_fkey foreign key (occurrence_id, event_id)
    references public.event_occurrences (id, event_id)
);

create index if not exists orders_buyer_recent_idx on public.orders (buyer_id, created_at desc, id);
create index if not exists orders_event_idx on public.orders (event_id, created_at);
create index if not exists orders_open_idx on public.orders (expires_at) where status in ('reserved', 'awaiting_payment');

create table if not exists public.order_items (
  order_id uuid not null references public.orders (id) on delete cascade,
  ticket_type_id uuid not null references public.ticket_types (id) on delete restrict,
  quantity integer not null check (quantity between 1 and 100),
  unit_price_minor bigint not null check (unit_price_minor >= 0),
  primary key (order_id, ticket_type_id)
);

create index if not exists order_items_ticket_type_idx on public.order_items (ticket_type_id);

-- Tickets held by an unpaid order. Availability counts only holds whose expires_at is ahead, so an
-- expired hold frees its tickets at once, before the sweeper deletes its row.
create table if not exists public.ticket_holds (
  order_id uuid not null references public.orders (id) on delete cascade,
  ticket_type_id uuid not null references public.ticket_types (id) on delete cascade,
  quantity integer not null check (quantity between 1 and 100),
  expires_at timestamptz not null,
  primary key (order_id, ticket_type_id)
);

create index if not exists ticket_holds_ticket_type_idx on public.ticket_holds (ticket_type_id, expires_at)
  include (quantity);

create table if not exists public.tickets (
  id uuid primary key,
  order_id uuid not null references public.orders (id) on delete restrict,
  event_id uuid not null references public.events (id) on delete restrict,
  ticket_type_id uuid not null references public.ticket_types (id) on delete restrict,
  occurrence_id uuid,
  holder_id uuid references auth.users (id) on delete set null,
  price_minor bigint not null check (price_minor >= 0),
  -- The signed payload of its QR code (Ed25519 over the ticket and event ids).
  code text not null unique,
  status text not null default 'valid' check (status in ('valid', 'checked_in', 'void')),
  checked_in_at timestamptz,
  voided_at timestamptz,
  created_at timestamptz not null default now(),
  constraint tickets_occurrence_fkey foreign key (occurrence_id, event_id)
    references public.event_occurrences (id, event_id)
);

create index if not exists tickets_holder_idx on public.tickets (holder_id, created_at, id);
create index if not exists tickets_event_idx on public.tickets (event_id, id);
create index if not exists tickets_order_idx on public.tickets (order_id);

-- Every scan, including duplicates and refusals: nothing a scanner uploads is lost.
create table if not exists public.check_ins (
  id bigint generated always as identity primary key,
  event_id uuid not null references public.events (id) on delete restrict,
  ticket_id uuid references public.tickets (id) on delete restrict,
  result text not null check (result in ('admitted', 'already_checked_in', 'invalid')),
  scanned_at timestamptz not null,
  received_at timestamptz not null default now(),
  device_id text not null default '' check (char_length(device_id) <= 100),
  scanned_by uuid
);

create index if not exists check_ins_ticket_idx on public.check_ins (ticket_id);
create index if not exists check_ins_event_idx on public.check_ins (event_id, id);

create table if not exists public.refunds (
  id uuid primary key default gen_random_uuid(),
  order_id uuid not null references public.orders (id) on delete restrict,
  amount_minor bigint not null check (amount_minor >= 0),
  ticket_ids uuid[] not null default '{}',
  reason text not null default '' check (char_length(reason) <= 500),
  -- pending until Stripe confirms it; the reconciler retries pending ones.
  status text not null default 'pending' check (status in ('pending', 'succeeded')),
  stripe_refund_id text unique,
  requested_by uuid,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now()
);

create index if not exists refunds_order_idx on public.refunds (order_id);
create index if not exists refunds_pending_idx on public.refunds (created_at) where status = 'pending';

-- Stripe events processed, by Stripe's id: the insert is in the same transaction as the event's
-- effect, so a repeated delivery finds the row and does nothing.
create table if not exists public.stripe_events (
  id text primary key,
  type text not null,
  object_id text,
  received_at timestamptz not null default now()
);

-- Messages to send (confirmations, refunds), written in the transaction of what they tell about.
create table if not exists public.outbox (
  id bigint generated always as identity primary key,
  topic text not null,
  aggregate_id uuid not null,
  payload jsonb not null,
  created_at timestamptz not null default now(),
  published_at timestamptz
);

create index if not exists outbox_unpublished_idx on public.outbox (id) where published_at is null;

alter table public.event_counters add column if not exists checked_in integer not null default 0;

-- `sold` is the server's: the orders' functions below (service_role) change it, nobody else.
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
  end if;
  if not localplus_private.is_privileged() then
    new.sold := case when tg_op = 'INSERT' then 0 else old.sold end;
  end if;
  new.updated_at := now();
  return new;
end
$$;

-- Tickets held by unexpired reservations of a ticket type: public, like availability.
create or replace function localplus_private.tickets_held(p_ticket_type_id uuid) returns integer
  language sql stable security definer
  set search_path = ''
  as $$
    select coalesce(sum(quantity), 0)::integer from public.ticket_holds
     where ticket_type_id = p_ticket_type_id and expires_at > now()
  $$;

-- Reserve tickets for a buyer: one statement, under a lock on each ticket type (taken in id order,
-- so two orders for the same types cannot deadlock), counting what is sold and what unexpired
-- holds keep. The same buyer's same request_id answers with the order it made before. Refusals are
-- raised with a reason in the hint: SOLD_OUT (SQLSTATE LP409: a conflict with other buyers, 409),
-- SALES_CLOSED, LIMIT_EXCEEDED, INVALID_ORDER (P0001: the request cannot succeed now, 400).
create or replace function localplus_private.reserve_order(p_buyer uuid, p_request_id text, p_items jsonb,
                                                           p_hold interval)
  returns uuid
  language plpgsql security definer
  set search_path = ''
  as $$
declare
  v_order uuid;
  v_event uuid;
  v_occurrence uuid;
  v_currency text;
  v_total bigint := 0;
  v_type record;
  v_wanted integer;
  v_taken integer;
  v_expires timestamptz := now() + p_hold;
begin
  select id into v_order from public.orders where buyer_id = p_buyer and request_id = p_request_id;
  if found then
    return v_order;
  end if;
  for v_type in
    -- A type for one occurrence of a recurring event sells until that occurrence ends, unless cancelled.
    select t.*, e.status as event_status, coalesce(oc.ends_at, e.ends_at) as admits_until,
           coalesce(oc.status, 'scheduled') as occurrence_status, i.quantity as wanted
      from public.ticket_types t
      join public.events e on e.id = t.event_id
      left join public.event_occurrences oc on oc.id = t.occurrence_id
      join (select (item ->> 'ticket_type_id')::uuid as id, (item ->> 'quantity')::integer as quantity
              from jsonb_array_elements(p_items) as item) i on i.id = t.id
     order by t.id
       for update of t
  loop
    v_wanted := v_type.wanted;
    if v_event is null then
      v_event := v_type.event_id;
      v_occurrence := v_type.occurrence_id;
      v_currency := v_type.currency;
    elsif v_event <> v_type.event_id or v_occurrence is distinct from v_type.occurrence_id then
      raise exception 'one order holds tickets of one event (and occurrence)'
        using errcode = 'P0001', hint = 'INVALID_ORDER';
    elsif v_currency <> v_type.currency then
      raise exception 'one order is paid in one currency' using errcode = 'P0001', hint = 'INVALID_ORDER';
    end if;
    if v_type.event_status <> 'published' or v_type.occurrence_status <> 'scheduled' or v_type.admits_until <= now()
       or (v_type.sales_starts_at is not null and v_type.sales_starts_at > now())
       or (v_type.sales_ends_at is not null and v_type.sales_ends_at <= now()) then
      raise exception '% is not on sale now', v_type.name using errcode = 'P0001', hint = 'SALES_CLOSED';
    end if;
    -- The per-order limits also cap what one buyer holds or has bought of a type across orders.
    select coalesce(sum(i.quantity), 0) + v_wanted into v_taken
      from public.order_items i join public.orders o on o.id = i.order_id
     where i.ticket_type_id = v_type.id and o.buyer_id = p_buyer
       and (o.status in ('paid', 'partially_refunded')
            or (o.status in ('reserved', 'awaiting_payment') and o.expires_at > now()));
    if v_wanted < v_type.min_per_order or v_taken > v_type.max_per_order then
      raise exception 'between % and % tickets of % per buyer', v_type.min_per_order, v_type.max_per_order,
        v_type.name using errcode = 'P0001', hint = 'LIMIT_EXCEEDED';
    end if;
    if v_type.sold + localplus_private.tickets_held(v_type.id) + v_wanted > v_type.inventory then
      raise exception '% is sold out', v_type.name using errcode = 'LP409', hint = 'SOLD_OUT';
    end if;
    v_total := v_total + v_wanted * v_type.price_minor;
  end loop;
  if v_event is null or (select count(*) from jsonb_array_elements(p_items)) <> (
       select count(*) from public.ticket_types where id in (
         select (item ->> 'ticket_type_id')::uuid from jsonb_array_elements(p_items) as item)) then
    raise exception 'unknown ticket type' using errcode = 'P0001', hint = 'INVALID_ORDER';
  end if;
  insert into public.orders (event_id, occurrence_id, buyer_id, request_id, currency, total_minor, expires_at)
  values (v_event, v_occurrence, p_buyer, p_request_id, v_currency, v_total, v_expires)
  returning id into v_order;
  insert into public.order_items (order_id, ticket_type_id, quantity, unit_price_minor)
  select v_order, t.id, (item ->> 'quantity')::integer, t.price_minor
    from jsonb_array_elements(p_items) as item join public.ticket_types t on t.id = (item ->> 'ticket_type_id')::uuid;
  insert into public.ticket_holds (order_id, ticket_type_id, quantity, expires_at)
  select v_order, i.ticket_type_id, i.quantity, v_expires from public.order_items i where i.order_id = v_order;
  return v_order;
end
$$;

-- Pay an order and issue its tickets, in one transaction: a paid order always has its tickets.
-- The caller supplies the tickets' ids and signed codes, one per admission, in item order. An
-- order whose hold has expired is paid if the tickets are still there; otherwise nothing changes
-- and the answer says so, for the payment to be refunded. Answers: 'paid', 'already_paid',
-- 'sold_out', 'cancelled' (the buyer gave it up first: refund), 'refunded' (refunded before the
-- payment's success arrived: nothing to do), 'no_order'.
create or replace function localplus_private.pay_order(p_order_id uuid, p_ticket_ids uuid[], p_codes text[],
                                                       p_confirmation_code text)
  returns text
  language plpgsql security definer
  set search_path = ''
  as $$
declare
  v_order public.orders;
  v_item record;
  v_held integer;
begin
  select * into v_order from public.orders where id = p_order_id for update;
  if not found then
    return 'no_order';
  end if;
  if v_order.status in ('paid', 'partially_refunded') then
    return 'already_paid';
  end if;
  if v_order.status in ('refunded', 'cancelled') then
    return v_order.status;
  end if;
  for v_item in
    select i.*, t.sold, t.inventory,
           (select h.quantity from public.ticket_holds h
             where h.order_id = i.order_id and h.ticket_type_id = i.ticket_type_id and h.expires_at > now()) as mine
      from public.order_items i join public.ticket_types t on t.id = i.ticket_type_id
     where i.order_id = p_order_id
     order by i.ticket_type_id
       for update of t
  loop
    -- Other orders' unexpired holds, plus what is sold, plus these tickets: within inventory?
    v_held := localplus_private.tickets_held(v_item.ticket_type_id) - coalesce(v_item.mine, 0);
    if v_item.sold + v_held + v_item.quantity > v_item.inventory then
      return 'sold_out';
    end if;
  end loop;
  delete from public.ticket_holds where order_id = p_order_id;
  update public.ticket_types t set sold = t.sold + i.quantity
    from public.order_items i where i.order_id = p_order_id and t.id = i.ticket_type_id;
  insert into public.tickets (id, order_id, event_id, ticket_type_id, occurrence_id, holder_id, price_minor, code)
  select ids.id, v_order.id, v_order.event_id, slots.ticket_type_id, v_order.occurrence_id, v_order.buyer_id,
         slots.unit_price_minor, ids.code
    from (select i.ticket_type_id, i.unit_price_minor,
                 row_number() over (order by i.ticket_type_id, n) as position
            from public.order_items i cross join generate_series(1, i.quantity) as n
           where i.order_id = p_order_id) slots
    join unnest(p_ticket_ids, p_codes) with ordinality as ids (id, code, position) using (position);
  update public.orders
     set status = 'paid', paid_at = now(), confirmation_code = p_confirmation_code, updated_at = now()
   where id = p_order_id;
  insert into public.outbox (topic, aggregate_id, payload)
  values ('order.paid', p_order_id, jsonb_build_object('order_id', p_order_id, 'buyer_id', v_order.buyer_id,
          'event_id', v_order.event_id, 'confirmation_code', p_confirmation_code));
  return 'paid';
end
$$;

-- Unpaid orders whose hold ran out: their holds go, they are expired. Holds stop counting the
-- moment they expire anyway; this keeps the tables small and the statuses true.
create or replace function localplus_private.expire_orders() returns integer
  language plpgsql security definer
  set search_path = ''
  as $$
declare
  v_expired integer;
begin
  delete from public.ticket_holds where expires_at <= now();
  update public.orders set status = 'expired', updated_at = now()
   where status in ('reserved', 'awaiting_payment') and expires_at <= now();
  get diagnostics v_expired = row_count;
  return v_expired;
end
$$;

-- Give up an unpaid order (its buyer, or the payment's cancellation): its holds go at once.
create or replace function localplus_private.cancel_order(p_order_id uuid) returns text
  language plpgsql security definer
  set search_path = ''
  as $$
declare
  v_status text;
begin
  select status into v_status from public.orders where id = p_order_id for update;
  if v_status is null then
    return 'no_order';
  end if;
  if v_status not in ('reserved', 'awaiting_payment') then
    return v_status;
  end if;
  delete from public.ticket_holds where order_id = p_order_id;
  update public.orders set status = 'cancelled', updated_at = now() where id = p_order_id;
  return 'cancelled';
end
$$;

-- Refund tickets of a paid order (all its admitting ones when p_ticket_ids is empty): they are void
-- and back on sale, the order records the amount, and a pending refund row waits for Stripe. The
-- order's lock makes two refunds of one order run one after the other. `p_settled`: the money is
-- back already (refunded at Stripe's end). Answers the refund's id, or null when nothing was left.
create or replace function localplus_private.refund_tickets(p_order_id uuid, p_ticket_ids uuid[], p_reason text,
                                                            p_requested_by uuid, p_settled boolean)
  returns uuid
  language plpgsql security definer
  set search_path = ''
  as $$
declare
  v_order public.orders;
  v_ids uuid[];
  v_amount bigint;
  v_refund uuid;
begin
  select * into v_order from public.orders where id = p_order_id for update;
  if not found or v_order.status not in ('paid', 'partially_refunded') then
    raise exception 'only a paid order can be refunded' using errcode = 'P0001', hint = 'INVALID_STATE';
  end if;
  select array_agg(id order by id), coalesce(sum(price_minor), 0) into v_ids, v_amount
    from public.tickets
   where order_id = p_order_id and status <> 'void'
     and (cardinality(p_ticket_ids) = 0 or id = any (p_ticket_ids));
  if cardinality(p_ticket_ids) > 0 and coalesce(cardinality(v_ids), 0) <> cardinality(p_ticket_ids) then
    raise exception 'some of those tickets are not this order''s, or were refunded already'
      using errcode = 'P0001', hint = 'INVALID_TICKETS';
  end if;
  if v_ids is null then
    return null;
  end if;
  update public.tickets set status = 'void', voided_at = now() where id = any (v_ids);
  update public.ticket_types t set sold = t.sold - v.n
    from (select ticket_type_id, count(*)::integer as n from public.tickets where id = any (v_ids) group by 1) v
   where t.id = v.ticket_type_id;
  update public.orders
     set refunded_minor = refunded_minor + v_amount,
         status = case when refunded_minor + v_amount >= total_minor
                         or not exists (select 1 from public.tickets where order_id = p_order_id and status <> 'void')
                       then 'refunded' else 'partially_refunded' end,
         updated_at = now()
   where id = p_order_id;
  insert into public.refunds (order_id, amount_minor, ticket_ids, reason, requested_by,
                              status)
  values (p_order_id, v_amount, v_ids, p_reason, p_requested_by,
          case when p_settled or v_amount = 0 or v_order.payment_intent_id is null then 'succeeded' else 'pending' end)
  returning id into v_refund;
  insert into public.outbox (topic, aggregate_id, payload)
  values ('order.refunded', p_order_id, jsonb_build_object('order_id', p_order_id, 'refund_id', v_refund,
          'amount_minor', v_amount, 'ticket_ids', to_jsonb(v_ids)));
  return v_refund;
end
$$;

-- A payment that cannot be fulfilled (sold out after its hold expired, or the buyer gave the order up
-- first) is refunded in full: the order is closed as refunded and a pending refund waits for Stripe.
create or replace function localplus_private.refund_payment(p_order_id uuid, p_reason text) returns uuid
  language plpgsql security definer
  set search_path = ''
  as $$
declare
  v_order public.orders;
  v_refund uuid;
begin
  select * into v_order from public.orders where id = p_order_id for update;
  if not found or v_order.status in ('paid', 'partially_refunded', 'refunded') then
    return null;
  end if;
  delete from public.ticket_holds where order_id = p_order_id;
  update public.orders set status = 'refunded', refunded_minor = total_minor, updated_at = now() where id = p_order_id;
  insert into public.refunds (order_id, amount_minor, reason, status)
  values (p_order_id, v_order.total_minor, p_reason, case when v_order.total_minor = 0 then 'succeeded' else 'pending' end)
  returning id into v_refund;
  insert into public.outbox (topic, aggregate_id, payload)
  values ('order.refunded', p_order_id, jsonb_build_object('order_id', p_order_id, 'refund_id', v_refund,
          'amount_minor', v_order.total_minor, 'reason', p_reason));
  return v_refund;
end
$$;

-- A payment refunded at Stripe before its success reached us (Stripe may deliver the two in either
-- order): the order is closed as refunded, so the late success issues nothing.
create or replace function localplus_private.close_refunded_order(p_order_id uuid, p_amount bigint) returns text
  language plpgsql security definer
  set search_path = ''
  as $$
declare
  v_status text;
begin
  select status into v_status from public.orders where id = p_order_id for update;
  if v_status is null then
    return 'no_order';
  end if;
  if v_status in ('paid', 'partially_refunded', 'refunded') then
    return v_status;
  end if;
  delete from public.ticket_holds where order_id = p_order_id;
  update public.orders set status = 'refunded', refunded_minor = least(p_amount, total_minor), updated_at = now()
   where id = p_order_id;
  return 'refunded';
end
$$;

-- Tickets scanned at the door count in the event's figures.
create or replace function localplus_private.tickets_count_check_ins() returns trigger
  language plpgsql security definer
  set search_path = ''
  as $$
declare
  v_delta integer := (case when new.status = 'checked_in' then 1 else 0 end)
                     - (case when tg_op = 'UPDATE' and old.status = 'checked_in' then 1 else 0 end);
begin
  if v_delta <> 0 then
    update public.event_counters set checked_in = checked_in + v_delta where event_id = new.event_id;
  end if;
  return null;
end
$$;

drop trigger if exists tickets_count_check_ins on public.tickets;
create trigger tickets_count_check_ins after insert or update of status on public.tickets
  for each row execute function localplus_private.tickets_count_check_ins();

-- Deleting what has been bought is refused with words (the foreign keys would refuse it too).
create or replace function localplus_private.refuse_deleting_sold() returns trigger
  language plpgsql
  set search_path = ''
  as $$
begin
  if tg_table_name = 'events' and exists (select 1 from public.orders where event_id = old.id) then
    raise exception 'this event has orders; cancel it instead' using errcode = 'P0001', hint = 'HAS_ORDERS';
  end if;
  if tg_table_name = 'ticket_types' and exists (select 1 from public.order_items where ticket_type_id = old.id) then
    raise exception 'tickets of this type were ordered; hide it instead' using errcode = 'P0001', hint = 'HAS_ORDERS';
  end if;
  return old;
end
$$;

drop trigger if exists events_refuse_deleting_sold on public.events;
create trigger events_refuse_deleting_sold before delete on public.events
  for each row execute function localplus_private.refuse_deleting_sold();
drop trigger if exists ticket_types_refuse_deleting_sold on public.ticket_types;
create trigger ticket_types_refuse_deleting_sold before delete on public.ticket_types
  for each row execute function localplus_private.refuse_deleting_sold();

-- Row-level security: buyers read their own orders and tickets; the event's editors those of their
-- event (check-in, refunds). Nothing is writable by an API role.
alter table public.orders enable row level security;
alter table public.order_items enable row level security;
alter table public.ticket_holds enable row level security;
alter table public.tickets enable row level security;
alter table public.check_ins enable row level security;
alter table public.refunds enable row level security;
alter table public.stripe_events enable row level security;
alter table public.outbox enable row level security;

drop policy if exists orders_read on public.orders;
create policy orders_read on public.orders for select to authenticated
  using (buyer_id = (select auth.uid()) or localplus_private.event_role_rank(event_id) >= 3);

drop policy if exists order_items_read on public.order_items;
create policy order_items_read on public.order_items for select to authenticated
  using (exists (select 1 from public.orders o where o.id = order_id));

drop policy if exists tickets_read on public.tickets;
create policy tickets_read on public.tickets for select to authenticated
  using (holder_id = (select auth.uid()) or localplus_private.event_role_rank(event_id) >= 3);

drop policy if exists check_ins_read on public.check_ins;
create policy check_ins_read on public.check_ins for select to authenticated
  using (localplus_private.event_role_rank(event_id) >= 3);

drop policy if exists refunds_read on public.refunds;
create policy refunds_read on public.refunds for select to authenticated
  using (exists (select 1 from public.orders o where o.id = order_id));

revoke all on public.orders, public.order_items, public.ticket_holds, public.tickets, public.check_ins,
  public.refunds, public.stripe_events, public.outbox
  from public, anon, authenticated;
revoke all on sequence public.check_ins_id_seq, public.outbox_id_seq from public, anon, authenticated;
grant select (id, event_id, occurrence_id, buyer_id, request_id, status, currency, total_minor, refunded_minor,
              expires_at, confirmation_code, payment_intent_id, checkout_session_id, disputed_at, paid_at,
              created_at, updated_at)
  on public.orders to authenticated;
grant select on public.order_items, public.tickets, public.check_ins, public.refunds to authenticated;
grant all on public.orders, public.order_items, public.ticket_holds, public.tickets, public.check_ins,
  public.refunds, public.stripe_events, public.outbox to service_role;
grant usage on sequence public.check_ins_id_seq, public.outbox_id_seq to service_role;

revoke all on function
  localplus_private.tickets_held(uuid),
  localplus_private.reserve_order(uuid, text, jsonb, interval),
  localplus_private.pay_order(uuid, uuid[], text[], text),
  localplus_private.expire_orders(),
  localplus_private.cancel_order(uuid),
  localplus_private.refund_tickets(uuid, uuid[], text, uuid, boolean),
  localplus_private.refund_payment(uuid, text),
  localplus_private.close_refunded_order(uuid, bigint),
  localplus_private.tickets_count_check_ins(),
  localplus_private.refuse_deleting_sold()
  from public, anon, authenticated, service_role;
-- Availability is public: an aggregate that says nothing about who holds what.
grant execute on function localplus_private.tickets_held(uuid) to anon, authenticated, service_role;
-- The server's own writes, for service_role only (never anon or authenticated).
grant execute on function
  localplus_private.reserve_order(uuid, text, jsonb, interval),
  localplus_private.pay_order(uuid, uuid[], text[], text),
  localplus_private.expire_orders(),
  localplus_private.cancel_order(uuid),
  localplus_private.refund_tickets(uuid, uuid[], text, uuid, boolean),
  localplus_private.refund_payment(uuid, text),
  localplus_private.close_refunded_order(uuid, bigint)
  to service_role;
