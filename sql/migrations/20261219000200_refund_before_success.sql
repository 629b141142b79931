-- A refund at Stripe reported before the payment's success (Stripe may deliver them in either order).
-- In full: the order is closed as refunded, so the late success issues nothing (as before). In part:
-- the payment stands, so the order stays as it is with the money back recorded (Stripe's running
-- total, once), and the success pays it, partially refunded. A payment that then cannot be fulfilled
-- (refund_payment) sends back only what is left of it. Replaces the rush buckets' two functions.
create or replace function localplus_private.close_refunded_order(p_order_id uuid, p_amount bigint) returns text
  language plpgsql security definer
  set search_path = ''
  as $$
declare
  v_order public.orders;
  v_amount bigint;
begin
  select * into v_order from public.orders where id = p_order_id for update;
  if not found then
    return 'no_order';
  end if;
  if v_order.status in ('paid', 'partially_refunded', 'refunded') then
    return v_order.status;
  end if;
  v_amount := least(p_amount, v_order.total_minor);
  if v_amount < v_order.total_minor then
    if v_amount > v_order.refunded_minor then
      insert into public.refunds (order_id, amount_minor, reason, status)
      values (p_order_id, v_amount - v_order.refunded_minor, 'refunded at Stripe', 'succeeded');
      update public.orders set refunded_minor = v_amount, updated_at = now() where id = p_order_id;
    end if;
    return v_order.status;
  end if;
  perform localplus_private.release_holds(p_order_id);
  update public.orders set status = 'refunded', refunded_minor = total_minor, updated_at = now()
   where id = p_order_id;
  return 'refunded';
end
$$;

create or replace function localplus_private.refund_payment(p_order_id uuid, p_reason text) returns uuid
  language plpgsql security definer
  set search_path = ''
  as $$
declare
  v_order public.orders;
  v_amount bigint;
  v_refund uuid;
begin
  select * into v_order from public.orders where id = p_order_id for update;
  if not found or v_order.status in ('paid', 'partially_refunded', 'refunded') then
    return null;
  end if;
  v_amount := v_order.total_minor - v_order.refunded_minor;  -- a part may be back already
  perform localplus_private.release_holds(p_order_id);
  update public.orders set status = 'refunded', refunded_minor = total_minor, updated_at = now() where id = p_order_id;
  insert into public.refunds (order_id, amount_minor, reason, status)
  values (p_order_id, v_amount, p_reason, case when v_amount = 0 then 'succeeded' else 'pending' end)
  returning id into v_refund;
  insert into public.outbox (topic, aggregate_id, payload)
  values ('order.refunded', p_order_id, jsonb_build_object('order_id', p_order_id, 'refund_id', v_refund,
          'amount_minor', v_amount, 'reason', p_reason));
  return v_refund;
end
$$;

-- Replacing keeps the grants; said again for a database that lost them.
revoke all on function localplus_private.close_refunded_order(uuid, bigint), localplus_private.refund_payment(uuid, text)
  from public, anon, authenticated;
grant execute on function localplus_private.close_refunded_order(uuid, bigint), localplus_private.refund_payment(uuid, text)
  to service_role;
