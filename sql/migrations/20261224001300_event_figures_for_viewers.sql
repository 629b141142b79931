-- An event's figures (registrations by status, guests, saves, check-ins) are its viewers' and up:
-- GET /api/events/{id}/stats answers a stranger 403, yet `select going, guests, ... from event_counters`
-- read them for any public event as `anon` or `authenticated`, straight through Supabase's REST.
--
-- API roles keep the two columns a search needs (the row's event and the popularity it may sort by);
-- the stats use cases read the rest as the server once they have checked the caller's rank. A table
-- revoke takes its column privileges with it, so the grant follows it.

revoke select on public.event_counters from anon, authenticated;
grant select (event_id, popularity) on public.event_counters to anon, authenticated;
