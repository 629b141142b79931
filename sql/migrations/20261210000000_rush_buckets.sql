-- Rush scale: a ticket type's inventory is split into buckets (rows of ticket_type_buckets) that
-- buyers draw from, so that thousands of buyers at once do not queue on ONE row lock (Phase 2 locked
-- the ticket type's row from the reservation to its commit, and a durable commit waits for the
-- disk: one flush per ticket). A buyer takes from a random bucket nobody else is drawing from
-- (FOR UPDATE SKIP LOCKED), falls through to the others, and hears SOLD_OUT only after waiting for
-- every bucket and finding all of them full once expired holds gave their tickets back.
--
-- In each bucket `taken` counts the tickets its holds keep (expired or not, until given back) and
-- the tickets sold from it; taken <= capacity (a CHECK: never oversold, whatever a function does),
-- and the capacities add up to the type's inventory. A hold names its bucket; paying it leaves the
-- bucket alone (held becomes sold), cancelling, expiring or refunding gives the tickets back.
-- `ticket_types.sold` stays the exact count of tickets sold, updated when an order is paid or
-- refunded, in the same transaction as the tickets issued or voided.

create table if not exists public.ticket_type_buckets (
  ticket_type_id uuid not null references public.ticket_types (id) on delete cascade,
  bucket smallint not null check (bucket between 0 and 255),
  capacity integer not null check (capacity >= 0),
  taken integer not null default 0,
  primary key (ticket_type_id, bucket),
  constraint ticket_type_buckets_taken_within_capacity check (taken between 0 and capacity)
);

alter table public.ticket_type_buckets enable row level security;
revoke all on public.ticket_type_buckets from public, anon, authenticated;
grant all on public.ticket_type_buckets to service_role;

-- A hold names the bucket its tickets came from; one order's tickets of one type may come from
-- several buckets (the last few tickets of a type may be spread over them).
alter table public.ticket_holds add column if not exists bucket smallint not null default 0;
alter table public.ticket_holds drop constraint if exists ticket_holds_pkey;
alter table public.ticket_holds add constraint ticket_holds_pkey primary key (order_id, ticket_type_id, bucket);

-- How many buckets a new ticket type gets: more than the requests a rush keeps in flight against one
-- type on one database (the services' pools), so a buyer rarely finds every bucket busy.
create or replace function localplus_private.default_buckets() returns integer
  language sql immutable
  as $$ select 16 $$;

-- (Re)split a ticket type into p_buckets buckets, keeping every hold and what is sold: the tickets
-- not taken are spread evenly over the buckets. With the same count (an inventory change) the rows
-- are changed in place, so buyers waiting for a bucket see its new capacity. Raises INVENTORY_TAKEN
-- (P0001) when the inventory is below what is sold and held.
create or replace function localplus_private.split_ticket_type(p_ticket_type_id uuid, p_buckets integer)
  returns void
  language plpgsql security definer
  set search_path = ''
  as $$
declare
  v_inventory integer;
  v_sold integer;
  v_count integer;
  v_free integer;
begin
  if p_buckets not between 1 and 256 then
    raise exception 'between 1 and 256 buckets' using errcode = 'P0001', hint = 'INVALID_BUCKETS';
  end if;
  -- Locked: a payment changes `sold` and the holds together, and both are counted here.
  select inventory, sold into v_inventory, v_sold from public.ticket_types where id = p_ticket_type_id
     for no key update;
  if not found then
    return;
  end if;
  perform 1 from public.ticket_type_buckets where ticket_type_id = p_ticket_type_id order by bucket for update;
  select count(*) into v_count from public.ticket_type_buckets where ticket_type_id = p_ticket_type_id;
  -- Expired holds give their tickets back first (they count for nobody).
  delete from public.ticket_holds where ticket_type_id = p_ticket_type_id and expires_at <= now();
  if v_count <> p_buckets then
    -- Holds move to the bucket of their number modulo the new count (one row per order and bucket).
    with moved as (
      delete from public.ticket_holds where ticket_type_id = p_ticket_type_id returning *
    )
    insert into public.ticket_holds (order_id, ticket_type_id, bucket, quantity, expires_at)
    select order_id, ticket_type_id, bucket % p_buckets, sum(quantity), max(expires_at) from moved group by 1, 2, 3;
    delete from public.ticket_type_buckets where ticket_type_id = p_ticket_type_id and bucket >= p_buckets;
    insert into public.ticket_type_buckets (ticket_type_id, bucket, capacity, taken)
    select p_ticket_type_id, n, 0, 0 from generate_series(0, p_buckets - 1) as n
    on conflict (ticket_type_id, bucket) do nothing;
  end if;
  select v_inventory - v_sold - coalesce(sum(quantity), 0) into v_free
    from public.ticket_holds where ticket_type_id = p_ticket_type_id;
  if v_free < 0 then
    raise exception 'inventory cannot be below the % tickets sold and held', v_inventory - v_free
      using errcode = 'P0001', hint = 'INVENTORY_TAKEN';
  end if;
  -- Each bucket: its holds, an even share of what is sold and of what is free.
  update public.ticket_type_buckets b
     set taken = s.taken, capacity = s.taken + v_free / p_buckets + (case when b.bucket < v_free % p_buckets then 1 else 0 end)
    from (select n as bucket,
                 coalesce((select sum(h.quantity) from public.ticket_holds h
                            where h.ticket_type_id = p_ticket_type_id and h.bucket = n), 0)::integer
                 + v_sold / p_buckets + (case when n < v_sold % p_buckets then 1 else 0 end) as taken
            from generate_series(0, p_buckets - 1) as n) s
   where b.ticket_type_id = p_ticket_type_id and b.bucket = s.bucket;
end
$$;

-- New ticket types get their buckets; an inventory change re-spreads the free tickets.
create or replace function localplus_private.ticket_types_split() returns trigger
  language plpgsql security definer
  set search_path = ''
  as $$
begin
  if tg_op = 'INSERT' then
    perform localplus_private.split_ticket_type(new.id, localplus_private.default_buckets());
  elsif new.inventory <> old.inventory then
    perform localplus_private.split_ticket_type(
      new.id, (select count(*)::integer from public.ticket_type_buckets where ticket_type_id = new.id));
  end if;
  return null;
end
$$;

drop trigger if exists ticket_types_split on public.ticket_types;
create trigger ticket_types_split after insert or update of inventory on public.ticket_types
  for each row execute function localplus_private.ticket_types_split();

-- Expired holds of a type give their tickets back to their buckets (the caller holds the buckets).
create or replace function localplus_private.reclaim_expired_holds(p_ticket_type_id uuid) returns void
  language sql security definer
  set search_path = ''
  as $$
    with gone as (
      delete from public.ticket_holds where ticket_type_id = p_ticket_type_id and expires_at <= now()
      returning bucket, quantity
    )
    update public.ticket_type_buckets b set taken = b.taken - g.quantity
      from (select bucket, sum(quantity)::integer as quantity from gone group by bucket) g
     where b.ticket_type_id = p_ticket_type_id and b.bucket = g.bucket
  $$;

-- Take p_quantity tickets of a type for an order, as holds until p_expires: true, or false when
-- fewer are left (then the caller fails its transaction, which undoes any part taken). First from
-- buckets nobody else is drawing from, starting at a random one; then, waiting for the busy ones,
-- from every bucket in bucket order after expired holds gave their tickets back, so that "sold out"
-- is exact: the last ticket of any bucket is found.
create or replace function localplus_private.take_tickets(p_ticket_type_id uuid, p_order_id uuid,
                                                          p_quantity integer, p_expires timestamptz)
  returns boolean
  language plpgsql security definer
  set search_path = ''
  as $$
declare
  v_left integer := p_quantity;
  v_seed integer := floor(random() * 65536)::integer;
  v_tried smallint[] := '{}';
  v_bucket smallint;
  v_free integer;
  v_take integer;
begin
  -- In a subtransaction: when the busy buckets have to be waited for, what was taken here goes back,
  -- and so do the locks taken here (a bucket locked and found full stays locked), which would
  -- otherwise break the bucket order of the wait below and let two buyers deadlock.
  begin
    loop
      select b.bucket, b.capacity - b.taken into v_bucket, v_free
      from public.ticket_type_buckets b
       where b.ticket_type_id = p_ticket_type_id and b.taken < b.capacity and b.bucket <> all (v_tried)
       order by b.bucket # v_seed
       limit 1
         for update of b skip locked;
      exit when not found;
      v_take := least(v_free, v_left);
      -- counted: this bucket has v_free tickets, and v_take of them are this order's.
      update public.ticket_type_buckets set taken = taken + v_take
       where ticket_type_id = p_ticket_type_id and bucket = v_bucket;
      insert into public.ticket_holds as h (order_id, ticket_type_id, bucket, quantity, expires_at)
      values (p_order_id, p_ticket_type_id, v_bucket, v_take, p_expires)
      on conflict (order_id, ticket_type_id, bucket) do update set quantity = h.quantity + excluded.quantity;
      v_left := v_left - v_take;
      if v_left = 0 then
        return true;
      end if;
      v_tried := v_tried || v_bucket;
    end loop;
    raise exception 'every bucket full or busy' using errcode = 'LPBSY';
  exception when sqlstate 'LPBSY' then
    v_left := p_quantity;
  end;
  -- Every bucket was full or busy: wait for all of them, in order (two such waits cannot deadlock).
  perform 1 from public.ticket_type_buckets where ticket_type_id = p_ticket_type_id order by bucket for update;
  perform localplus_private.reclaim_expired_holds(p_ticket_type_id);
  for v_bucket, v_free in
    select b.bucket, b.capacity - b.taken from public.ticket_type_buckets b
     where b.ticket_type_id = p_ticket_type_id and b.taken < b.capacity order by b.bucket
  loop
    v_take := least(v_free, v_left);
    update public.ticket_type_buckets set taken = taken + v_take
     where ticket_type_id = p_ticket_type_id and bucket = v_bucket;
    insert into public.ticket_holds as h (order_id, ticket_type_id, bucket, quantity, expires_at)
    values (p_order_id, p_ticket_type_id, v_bucket, v_take, p_expires)
    on conflict (order_id, ticket_type_id, bucket) do update set quantity = h.quantity + excluded.quantity;
    v_left := v_left - v_take;
    exit when v_left = 0;
  end loop;
  return v_left = 0;
end
$$;

-- An order's holds go, and their tickets back to their buckets (cancelled, refunded before paid).
create or replace function localplus_private.release_holds(p_order_id uuid) returns void
  language sql security definer
  set search_path = ''
  as $$
    with gone as (
      delete from public.ticket_holds where order_id = p_order_id returning ticket_type_id, bucket, quantity
    )
    update public.ticket_type_buckets b set taken = b.taken - g.quantity
      from (select ticket_type_id, bucket, sum(quantity)::integer as quantity from gone group by 1, 2) g
     where b.ticket_type_id = g.ticket_type_id and b.bucket = g.bucket
  $$;

-- Tickets sold that are back on sale (refunded): taken from the buckets holding sold tickets.
create or replace function localplus_private.return_sold(p_ticket_type_id uuid, p_quantity integer) returns void
  language plpgsql security definer
  set search_path = ''
  as $$
declare
  v_left integer := p_quantity;
  v_bucket record;
begin
  for v_bucket in
    select b.bucket, b.taken - coalesce((select sum(h.quantity) from public.ticket_holds h
                                          where h.ticket_type_id = b.ticket_type_id and h.bucket = b.bucket), 0)
             as sold_here
      from public.ticket_type_buckets b where b.ticket_type_id = p_ticket_type_id order by b.bucket
       for update of b
  loop
    exit when v_left = 0;
    continue when v_bucket.sold_here <= 0;
    update public.ticket_type_buckets set taken = taken - least(v_left, v_bucket.sold_here)
     where ticket_type_id = p_ticket_type_id and bucket = v_bucket.bucket;
    v_left := v_left - least(v_left, v_bucket.sold_here);
  end loop;
end
$$;

-- Reserve tickets for a buyer. The buyer's own requests queue on a lock of their own (the same
-- request_id answers with the order it made; the per-buyer limits count their other orders), and
-- the tickets come from the types' buckets (take_tickets), so buyers of one type do not queue on
-- the type's row. Refusals carry a reason in the hint: SOLD_OUT (LP409, a 409), SALES_CLOSED,
-- LIMIT_EXCEEDED, INVALID_ORDER (P0001, a 400).
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
  v_types integer := 0;
  v_taken integer;
  v_expires timestamptz := now() + p_hold;
begin
  -- 20261210: the reservations' namespace of advisory locks; the second key is the buyer's.
  perform pg_advisory_xact_lock(20261210, hashtext(p_buyer::text));
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
  loop
    v_types := v_types + 1;
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
    select coalesce(sum(i.quantity), 0) + v_type.wanted into v_taken
      from public.order_items i join public.orders o on o.id = i.order_id
     where i.ticket_type_id = v_type.id and o.buyer_id = p_buyer
       and (o.status in ('paid', 'partially_refunded')
            or (o.status in ('reserved', 'awaiting_payment') and o.expires_at > now()));
    if v_type.wanted < v_type.min_per_order or v_taken > v_type.max_per_order then
      raise exception 'between % and % tickets of % per buyer', v_type.min_per_order, v_type.max_per_order,
        v_type.name using errcode = 'P0001', hint = 'LIMIT_EXCEEDED';
    end if;
    if v_type.inventory - v_type.sold < v_type.wanted then
      -- No bucket can have them (sold only grows under the buckets' own counts): no need to wait for one.
      raise exception '% is sold out', v_type.name using errcode = 'LP409', hint = 'SOLD_OUT';
    end if;
    v_total := v_total + v_type.wanted * v_type.price_minor;
  end loop;
  if v_event is null or v_types <> (select count(*) from jsonb_array_elements(p_items)) then
    raise exception 'unknown ticket type' using errcode = 'P0001', hint = 'INVALID_ORDER';
  end if;
  insert into public.orders (event_id, occurrence_id, buyer_id, request_id, currency, total_minor, expires_at)
  values (v_event, v_occurrence, p_buyer, p_request_id, v_currency, v_total, v_expires)
  returning id into v_order;
  insert into public.order_items (order_id, ticket_type_id, quantity, unit_price_minor)
  select v_order, t.id, (item ->> 'quantity')::integer, t.price_minor
    from jsonb_array_elements(p_items) as item join public.ticket_types t on t.id = (item ->> 'ticket_type_id')::uuid;
  for v_type in select ticket_type_id, quantity from public.order_items where order_id = v_order order by ticket_type_id
  loop
    if not localplus_private.take_tickets(v_type.ticket_type_id, v_order, v_type.quantity, v_expires) then
      raise exception '% is sold out', (select name from public.ticket_types where id = v_type.ticket_type_id)
        using errcode = 'LP409', hint = 'SOLD_OUT';
    end if;
  end loop;
  return v_order;
end
$$;

-- Pay an order and issue its tickets, in one transaction: a paid order always has its tickets.
-- The caller supplies the tickets' ids and signed codes, one per admission, in item order. Its holds
-- become tickets sold (their buckets keep counting them). An order whose hold has expired is paid if
-- its holds were not given back yet, or if the buckets still have the tickets; otherwise nothing
-- changes and the answer says so, for the payment to be refunded. Answers: 'paid', 'already_paid',
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
  if exists (select 1 from public.order_items i where i.order_id = p_order_id and i.quantity > (
               select coalesce(sum(h.quantity), 0) from public.ticket_holds h
                where h.order_id = i.order_id and h.ticket_type_id = i.ticket_type_id)) then
    -- Its expired holds were given back to other buyers: take the tickets again if they are there.
    begin
      for v_item in
        select i.ticket_type_id, i.quantity - coalesce(sum(h.quantity), 0)::integer as missing
          from public.order_items i
          left join public.ticket_holds h on h.order_id = i.order_id and h.ticket_type_id = i.ticket_type_id
         where i.order_id = p_order_id group by i.ticket_type_id, i.quantity order by i.ticket_type_id
      loop
        if v_item.missing > 0
           and not localplus_private.take_tickets(v_item.ticket_type_id, p_order_id, v_item.missing, now()) then
          raise exception 'sold out' using errcode = 'LP409';
        end if;
      end loop;
    exception when sqlstate 'LP409' then
      return 'sold_out';
    end;
  end if;
  delete from public.ticket_holds where order_id = p_order_id;
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
  -- Last: the type's row is the one every payment of the type updates, so it is locked the shortest.
  update public.ticket_types t set sold = t.sold + i.quantity
    from public.order_items i where i.order_id = p_order_id and t.id = i.ticket_type_id;
  return 'paid';
end
$$;

-- Unpaid orders whose hold ran out: their holds go, their tickets back to the buckets, they are
-- expired. Holds stop counting for the buyers the moment they expire; a buyer who finds every bucket
-- full gives expired holds back itself (take_tickets), so this only keeps the tables small and the
-- statuses true.
create or replace function localplus_private.expire_orders() returns integer
  language plpgsql security definer
  set search_path = ''
  as $$
declare
  v_expired integer;
begin
  perform 1 from public.ticket_type_buckets b
   where exists (select 1 from public.ticket_holds h
                  where h.ticket_type_id = b.ticket_type_id and h.bucket = b.bucket and h.expires_at <= now())
   order by b.ticket_type_id, b.bucket
     for update of b;
  with gone as (
    delete from public.ticket_holds where expires_at <= now() returning ticket_type_id, bucket, quantity
  )
  update public.ticket_type_buckets b set taken = b.taken - g.quantity
    from (select ticket_type_id, bucket, sum(quantity)::integer as quantity from gone group by 1, 2) g
   where b.ticket_type_id = g.ticket_type_id and b.bucket = g.bucket;
  update public.orders set status = 'expired', updated_at = now()
   where status in ('reserved', 'awaiting_payment') and expires_at <= now();
  get diagnostics v_expired = row_count;
  return v_expired;
end
$$;

-- Give up an unpaid order (its buyer, or the payment's cancellation): its tickets go back at once.
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
  perform localplus_private.release_holds(p_order_id);
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
  v_type record;
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
  for v_type in
    select ticket_type_id, count(*)::integer as n from public.tickets where id = any (v_ids) group by 1 order by 1
  loop
    perform localplus_private.return_sold(v_type.ticket_type_id, v_type.n);
    update public.ticket_types set sold = sold - v_type.n where id = v_type.ticket_type_id;
  end loop;
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
  perform localplus_private.release_holds(p_order_id);
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
  perform localplus_private.release_holds(p_order_id);
  update public.orders set status = 'refunded', refunded_minor = least(p_amount, total_minor), updated_at = now()
   where id = p_order_id;
  return 'refunded';
end
$$;

-- Existing ticket types get their buckets (their holds go to bucket 0 and are spread from there).
select localplus_private.split_ticket_type(t.id, localplus_private.default_buckets())
  from public.ticket_types t
 where not exists (select 1 from public.ticket_type_buckets b where b.ticket_type_id = t.id);

revoke all on function
  localplus_private.default_buckets(),
  localplus_private.split_ticket_type(uuid, integer),
  localplus_private.ticket_types_split(),
  localplus_private.reclaim_expired_holds(uuid),
  localplus_private.take_tickets(uuid, uuid, integer, timestamptz),
  localplus_private.release_holds(uuid),
  localplus_private.return_sold(uuid, integer),
  localplus_private.reserve_order(uuid, text, jsonb, interval),
  localplus_private.pay_order(uuid, uuid[], text[], text),
  localplus_private.expire_orders(),
  localplus_private.cancel_order(uuid),
  localplus_private.refund_tickets(uuid, uuid[], text, uuid, boolean),
  localplus_private.refund_payment(uuid, text),
  localplus_private.close_refunded_order(uuid, bigint)
  from public, anon, authenticated, service_role;
-- The server's own writes, for service_role only (never anon or authenticated).
grant execute on function
  localplus_private.split_ticket_type(uuid, integer),
  localplus_private.reserve_order(uuid, text, jsonb, interval),
  localplus_private.pay_order(uuid, uuid[], text[], text),
  localplus_private.expire_orders(),
  localplus_private.cancel_order(uuid),
  localplus_private.refund_tickets(uuid, uuid[], text, uuid, boolean),
  localplus_private.refund_payment(uuid, text),
  localplus_private.close_refunded_order(uuid, bigint)
  to service_role;
