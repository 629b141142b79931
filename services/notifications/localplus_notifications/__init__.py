"""The notifications worker: delivers the outbox (public.notifications) by email and web push."""
