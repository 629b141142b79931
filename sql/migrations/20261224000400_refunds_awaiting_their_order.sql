-- A refund made at Stripe whose `charge.refunded` names a PaymentIntent that no order names yet.
--
-- A Checkout Session's PaymentIntent is known only from its `checkout.session.completed` (and an
-- app's PaymentIntent only once the order records it). Stripe may deliver the refund first, for
-- instance after the success's delivery failed and is retried. That refund used to be dropped, and
-- the success then issued tickets for money already given back. It is now kept here, by
-- PaymentIntent, with Stripe's running total, until a success names the PaymentIntent and applies it
-- (localplus_ticketing.payments). The ticketing service alone reads and writes it.
create table if not exists public.stripe_refunds_awaiting_order (
  payment_intent_id text primary key check (length(payment_intent_id) between 1 and 255),
  amount_refunded bigint not null check (amount_refunded >= 0),
  amount bigint check (amount >= 0),
  received_at timestamptz not null default now()
);

alter table public.stripe_refunds_awaiting_order enable row level security;
revoke all on public.stripe_refunds_awaiting_order from public, anon, authenticated;
grant select, insert, update, delete on public.stripe_refunds_awaiting_order to service_role;
