-- Refunding some tickets of an order leaves it partially refunded while any of its tickets still
-- admits: the money alone cannot say so (a free order's tickets cost nothing, and a partial refund
-- made at Stripe's end names no tickets). What goes back is the tickets' price, but never more than
-- is left of the order's total (Stripe refunds no more than was paid; the rest came back already).
-- Replaces the rush buckets' function, otherwise unchanged.
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
  v_amount := least(v_amount, v_order.total_minor - v_order.refunded_minor);
  update public.tickets set status = 'void', voided_at = now() where id = any (v_ids);
  for v_type in
    select ticket_type_id, count(*)::integer as n from public.tickets where id = any (v_ids) group by 1 order by 1
  loop
    perform localplus_private.return_sold(v_type.ticket_type_id, v_type.n);
    update public.ticket_types set sold = sold - v_type.n where id = v_type.ticket_type_id;
  end loop;
  update public.orders
     set refunded_minor = refunded_minor + v_amount,
         status = case when exists (select 1 from public.tickets where order_id = p_order_id and status <> 'void')
                       then 'partially_refunded' else 'refunded' end,
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

-- Replacing keeps the grants; said again for a database that lost them.
revoke all on function localplus_private.refund_tickets(uuid, uuid[], text, uuid, boolean)
  from public, anon, authenticated;
grant execute on function localplus_private.refund_tickets(uuid, uuid[], text, uuid, boolean) to service_role;
