-- An order that expired unpaid kept its PaymentIntent open at Stripe, so its buyer could still pay
-- for tickets that had gone back on sale, and be refunded when the payment's webhook arrived
-- (payments._paid). expire_due_orders replaces expire_orders: the same body, but it answers the orders
-- it expired with their PaymentIntents, which the sweeper then cancels at Stripe (best effort: a
-- payment that gets through anyway is still refunded, or paid if the tickets are still there). A new
-- name because a function's result type cannot change in place, and the earlier migrations, run
-- again, create expire_orders as they did.
drop function if exists localplus_private.expire_orders();
create or replace function localplus_private.expire_due_orders() returns table (order_id uuid, payment_intent_id text)
  language plpgsql security definer
  set search_path = ''
  as $$
#variable_conflict use_column
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
  return query
    with expired as (
      update public.orders o set status = 'expired', updated_at = now()
       where o.status in ('reserved', 'awaiting_payment') and o.expires_at <= now()
      returning o.id, o.payment_intent_id
    )
    select e.id, e.payment_intent_id from expired e;
end
$$;

revoke all on function localplus_private.expire_due_orders() from public, anon, authenticated, service_role;
grant execute on function localplus_private.expire_due_orders() to service_role;
