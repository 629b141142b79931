-- Blocked seats (editors' house seats, wheelchair companions) are not for sale, yet a seated type's
-- `available` (inventory - sold - held) counted them as free. seats_blocked counts a type's live
-- blocked seats (of its category, for its occurrence key: where its orders claim seats), which the
-- ticket types' reads subtract too, so sold + held + available + blocked is the type's inventory.
create index if not exists seat_claims_blocked_idx on public.seat_claims (occurrence_key) where kind = 'blocked';

create or replace function localplus_private.seats_blocked(p_ticket_type_id uuid) returns integer
  language sql stable security definer
  set search_path = ''
  as $$
    select count(*)::integer
      from public.ticket_types t
      join public.seat_claims c on c.occurrence_key = coalesce(t.occurrence_id, t.event_id) and c.kind = 'blocked'
      join public.event_seats es on es.id = c.seat_id and es.event_id = t.event_id
      join public.plan_seats ps on ps.id = es.plan_seat_id and ps.category = t.seat_category
     where t.id = p_ticket_type_id and localplus_private.seat_claim_live(c.during)
  $$;

-- Public, like availability (and like a seat's status, which shows it is blocked).
revoke all on function localplus_private.seats_blocked(uuid) from public;
grant execute on function localplus_private.seats_blocked(uuid) to anon, authenticated, service_role;
