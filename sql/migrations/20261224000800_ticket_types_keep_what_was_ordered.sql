-- What a ticket type has sold stays what it was sold as.
--
-- An editor could change a ticket type's occurrence after tickets of it were ordered (through the API,
-- and through Supabase's REST): seat claims are keyed by the occurrence, so a seat sold for the old
-- one was on sale again under the new one and sold twice, and the orders named an occurrence their
-- type no longer sold for. The currency stayed only by the service's own check, not in SQL. Now a
-- ticket type with order items (held, paid or refunded) keeps its event, occurrence, currency and
-- seat category; its price (for later orders), inventory (not below what is sold and held), limits,
-- sales window and text still change.

create or replace function localplus_private.ticket_types_keep_what_was_ordered() returns trigger
  language plpgsql security definer
  set search_path = ''
  as $$
begin
  -- Definer: the caller may not see every order of the type, and any one of them counts.
  if (new.event_id, new.occurrence_id, new.currency, new.seat_category)
       is distinct from (old.event_id, old.occurrence_id, old.currency, old.seat_category)
     and exists (select 1 from public.order_items where ticket_type_id = old.id) then
    raise exception 'tickets of this type were ordered: its occurrence, currency and seat category stay'
      using errcode = 'P0001', hint = 'HAS_ORDERS';
  end if;
  return new;
end
$$;

revoke all on function localplus_private.ticket_types_keep_what_was_ordered()
  from public, anon, authenticated, service_role;

drop trigger if exists ticket_types_keep_what_was_ordered on public.ticket_types;
create trigger ticket_types_keep_what_was_ordered
  before update of event_id, occurrence_id, currency, seat_category on public.ticket_types
  for each row execute function localplus_private.ticket_types_keep_what_was_ordered();
