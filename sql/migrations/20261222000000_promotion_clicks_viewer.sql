-- A promotion's partners read its clicks' days and cost, never who clicked: `viewer` is a user's id or
-- an unsalted hash of an address and User-Agent (localplus_common.viewers), which hashing every
-- address with common User-Agents reverses. Only the server reads it (to count a viewer once a day).
revoke all on public.promotion_clicks from public, anon, authenticated;
grant select (promotion_id, day, spent_milli, created_at) on public.promotion_clicks to authenticated;
