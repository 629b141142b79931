-- Phase 2, payments: a refund of a payment other than the order's own. A buyer can pay one order
-- twice (the app's PaymentIntent and the web's Checkout Session); the second payment is refunded
-- whole, to that PaymentIntent, and is not a refund of the order's sale (its figures leave it out).
-- Null: the order's own payment (orders.payment_intent_id).
alter table public.refunds add column if not exists payment_intent_id text;
