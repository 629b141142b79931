-- Refunded tickets no longer count against the buyer's per-buyer limit.
--
-- reserve_order counted every ticket ordered in a partially refunded order: a buyer who bought 4 of a
-- 4-per-buyer type and had 2 refunded holds 2, but was refused 1 more (LIMIT_EXCEEDED, "you have 4
-- ... already"); a wholly refunded order already counted nothing. Now a partially refunded order
-- counts the tickets of the type it still has that are not void. Replaces 20261224001930's function,
-- otherwise unchanged.

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
  v_left integer;
  v_had integer;
  v_name text;
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
           coalesce(oc.status, 'scheduled') as occurrence_status, i.quantity as wanted,
           (select coalesce(sum(b.sold), 0) from public.ticket_type_buckets b where b.ticket_type_id = t.id) as sold
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
    -- Of a paid order, the tickets still held (not refunded); of an unpaid one, what it holds.
    select coalesce(sum(case when o.status = 'partially_refunded'
                             then (select count(*) from public.tickets t
                                    where t.order_id = o.id and t.ticket_type_id = i.ticket_type_id
                                      and t.status <> 'void')
                             else i.quantity end), 0) + v_type.wanted into v_taken
      from public.order_items i join public.orders o on o.id = i.order_id
     where i.ticket_type_id = v_type.id and o.buyer_id = p_buyer
       and (o.status in ('paid', 'partially_refunded')
            or (o.status in ('reserved', 'awaiting_payment') and o.expires_at > now()));
    if v_type.wanted < v_type.min_per_order or v_taken > v_type.max_per_order then
      -- What the buyer holds or bought already, and so may still take (the wanted count is theirs to pick).
      v_had := v_taken - v_type.wanted;
      v_left := greatest(0, v_type.max_per_order - v_had);
      raise exception '%', case when v_had = 0 or v_type.wanted < v_type.min_per_order
                                  then 'between ' || v_type.min_per_order || ' and ' || v_type.max_per_order
                                       || ' tickets of ' || v_type.name || ' per buyer'
                                when v_left = 0
                                  then 'you have ' || v_had || ' ' || v_type.name || ' tickets already, the most per buyer'
                                else 'you have ' || v_had || ' ' || v_type.name || ' tickets already: ' || v_left
                                     || ' more at most (' || v_type.max_per_order || ' per buyer)' end
        using errcode = 'P0001', hint = 'LIMIT_EXCEEDED',
        detail = json_build_object('ticket_type_id', v_type.id::text, 'remaining', v_left::text,
                                   'max_per_order', v_type.max_per_order::text)::text;
    end if;
    if v_type.inventory - v_type.sold < v_type.wanted then
      -- No bucket can have them (sold only grows under the buckets' own counts): no need to wait for one.
      -- What is left is read without the buckets' locks: what availability shows now.
      v_left := greatest(0, v_type.inventory - v_type.sold - localplus_private.tickets_held(v_type.id)
                              - localplus_private.seats_blocked(v_type.id));
      raise exception '%', case when v_left = 0 then v_type.name || ' is sold out'
                        when v_left = 1 then 'only 1 ' || v_type.name || ' ticket is left'
                        else 'only ' || v_left || ' ' || v_type.name || ' tickets are left' end
        using errcode = 'LP409', hint = 'SOLD_OUT',
        detail = json_build_object('ticket_type_id', v_type.id::text, 'available', v_left::text)::text;
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
      -- take_tickets waited for every bucket and took every ticket left: exactly what this order holds now
      -- (given back with the transaction).
      select coalesce(sum(quantity), 0)::integer into v_left from public.ticket_holds
       where order_id = v_order and ticket_type_id = v_type.ticket_type_id;
      v_name := (select name from public.ticket_types where id = v_type.ticket_type_id);
      raise exception '%', case when v_left = 0 then v_name || ' is sold out'
                        when v_left = 1 then 'only 1 ' || v_name || ' ticket is left'
                        else 'only ' || v_left || ' ' || v_name || ' tickets are left' end
        using errcode = 'LP409', hint = 'SOLD_OUT',
        detail = json_build_object('ticket_type_id', v_type.ticket_type_id::text, 'available', v_left::text)::text;
    end if;
  end loop;
  return v_order;
end
$$;
