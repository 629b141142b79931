-- A buyer over a type's per-buyer limit heard "between 1 and 4 tickets of <type> per buyer" even when
-- what they asked for was within it and only what they held already made it too many (3 held, asking
-- 2): they could not tell that 1 more would do. Still a 400 LIMIT_EXCEEDED; when they hold some
-- already it now says how many and how many more they may take ("you have 3 <type> tickets already:
-- 1 more at most (4 per buyer)"), with `remaining` and `max_per_order` in the DETAIL (ErrorInfo
-- metadata); the same for orders of seats. Replaces 20261224001900's reserve_order and
-- 20261224001920's reserve_seats, otherwise unchanged.

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
    select coalesce(sum(i.quantity), 0) + v_type.wanted into v_taken
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
  v_left integer;
  v_had integer;
begin
  -- 20261210: the reservations' namespace of advisory locks, the buyer's key (as reserve_order's): the
  -- same request_id answers the order it made, and the per-buyer limit counts the buyer's other orders.
  perform pg_advisory_xact_lock(20261210, hashtext(p_buyer::text));
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
    select count(*)::integer into v_had from public.seat_claims c join public.orders o on o.id = c.order_id
     where c.ticket_type_id = v_type.id and o.buyer_id = p_buyer and localplus_private.seat_claim_live(c.during);
    if v_type.wanted < v_type.min_per_order or v_type.wanted + v_had > v_type.max_per_order then
      v_left := greatest(0, v_type.max_per_order - v_had);
      raise exception '%', case when v_had = 0 or v_type.wanted < v_type.min_per_order
                                  then 'between ' || v_type.min_per_order || ' and ' || v_type.max_per_order
                                       || ' seats of ' || v_type.name || ' per buyer'
                                when v_left = 0
                                  then 'you have ' || v_had || ' ' || v_type.name || ' seats already, the most per buyer'
                                else 'you have ' || v_had || ' ' || v_type.name || ' seats already: ' || v_left
                                     || ' more at most (' || v_type.max_per_order || ' per buyer)' end
        using errcode = 'P0001', hint = 'LIMIT_EXCEEDED',
        detail = json_build_object('ticket_type_id', v_type.id::text, 'remaining', v_left::text,
                                   'max_per_order', v_type.max_per_order::text)::text;
    end if;
  end loop;

  loop
    v_attempt := v_attempt + 1;
    if p_best_type is not null then
      v_seats := localplus_private.best_seats(p_event, v_key, v_category, p_quantity);
      if v_seats is null then
        -- The seats of the category left for the occurrence (no live claim: held, sold or blocked).
        select count(*)::integer into v_left
          from public.event_seats es join public.plan_seats ps on ps.id = es.plan_seat_id
         where es.event_id = p_event and ps.category = v_category
           and not exists (select 1 from public.seat_claims c
                            where c.seat_id = es.id and c.occurrence_key = v_key
                              and localplus_private.seat_claim_live(c.during));
        raise exception '%', case when v_left = 0 then v_type.name || ' is sold out'
                                  when v_left >= p_quantity
                                    then 'no ' || p_quantity || ' adjacent seats of ' || v_type.name || ' are left'
                                  when v_left = 1 then 'only 1 ' || v_type.name || ' ticket is left'
                                  else 'only ' || v_left || ' ' || v_type.name || ' tickets are left' end
          using errcode = 'LP409', hint = 'SOLD_OUT',
          detail = json_build_object('ticket_type_id', p_best_type::text, 'available', v_left::text)::text;
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
