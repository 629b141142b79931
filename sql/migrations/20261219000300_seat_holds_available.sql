-- What unexpired reservations hold of a ticket type includes the seats an unpaid order holds: seated
-- orders claim seats (seat_claims), not ticket_holds, so a seated type's `available` (inventory -
-- sold - held) told buyers its held seats were free. A hold is counted until its range ends, which
-- is the instant it expires (or is cancelled): an expired hold never reduces availability, sweeper
-- or not. Replaces the ticketing migration's function, otherwise unchanged.
create index if not exists seat_claims_held_by_type_idx on public.seat_claims (ticket_type_id, upper(during))
  where kind = 'held';

create or replace function localplus_private.tickets_held(p_ticket_type_id uuid) returns integer
  language sql stable security definer
  set search_path = ''
  as $$
    select (select coalesce(sum(quantity), 0)::integer from public.ticket_holds
             where ticket_type_id = p_ticket_type_id and expires_at > now())
         + (select count(*)::integer from public.seat_claims
             where ticket_type_id = p_ticket_type_id and kind = 'held' and upper(during) > now())
  $$;

-- Replacing keeps the grants; said again for a database that lost them (public, like availability).
revoke all on function localplus_private.tickets_held(uuid) from public;
grant execute on function localplus_private.tickets_held(uuid) to anon, authenticated, service_role;
