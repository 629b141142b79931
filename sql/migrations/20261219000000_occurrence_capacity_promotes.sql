-- An occurrence's places change with its own capacity (set, raised, or cleared so that the event's
-- applies) and with its taking place again (un-cancelled, or back in the series): each can let the
-- head of its waitlist in, as a larger event capacity does (events_after_capacity_change).
-- promote_waitlist lets in only whoever fits, so a smaller capacity changes nothing.
-- Lock order: promote_waitlist locks the event row after this update locked the occurrence row, the
-- reverse of a registration's; writers lock the event first (the recurrence service's PATCH does), and
-- a deadlock with one that does not rolls back whole and is retried (localplus_common.db).
create or replace function localplus_private.event_occurrences_after_capacity_change() returns trigger
  language plpgsql security definer
  set search_path = ''
  as $$
begin
  if new.status = 'scheduled' then
    perform localplus_private.promote_waitlist(new.event_id, new.id);
  end if;
  return null;
end
$$;

drop trigger if exists event_occurrences_after_capacity_change on public.event_occurrences;
create trigger event_occurrences_after_capacity_change
  after update of capacity, cancelled, in_series on public.event_occurrences
  for each row when (new.capacity is distinct from old.capacity or new.status is distinct from old.status)
  execute function localplus_private.event_occurrences_after_capacity_change();

revoke all on function localplus_private.event_occurrences_after_capacity_change()
  from public, anon, authenticated, service_role;
