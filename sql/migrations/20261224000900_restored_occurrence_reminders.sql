-- An occurrence that takes place again gets its reminders again.
--
-- Cancelling an occurrence cancelled the pending reminders of its registrations; restoring it (the
-- registrations stay `going`) changed neither its time nor its news, so the trigger returned before
-- scheduling anything, and those people were never reminded. Now a restored occurrence has its
-- reminders scheduled anew (no message of its own: there is none for taking place again). The rest of
-- the function is as in 20261213000000_notifications.sql.

create or replace function localplus_private.event_occurrences_notify() returns trigger
  language plpgsql security definer
  set search_path = ''
  as $$
declare
  v_users uuid[];
  v_kind text;
begin
  if new.status = 'cancelled' and old.status <> 'cancelled' then
    v_kind := 'occurrence_cancelled';
  elsif new.status = 'scheduled' and new.starts_at <> old.starts_at then
    v_kind := 'occurrence_moved';
  elsif new.status = 'scheduled' and old.status <> 'scheduled' then
    v_kind := null;  -- taking place again, as scheduled: only its reminders
  else
    return null;  -- (the horizon job rewrites occurrences unchanged)
  end if;
  if (select e.status from public.events e where e.id = new.event_id) is distinct from 'published' then
    return null;  -- a cancelled event has told its own news
  end if;
  select array_agg(p.user_id) into v_users from public.event_participants p
   where p.event_id = new.event_id and p.occurrence_id = new.id and p.status in ('going', 'waitlisted');
  if v_users is not null and v_kind is not null then
    perform localplus_private.notify(v_kind, v_users, new.event_id, new.id, null,
      jsonb_build_object('previous_starts_at', old.starts_at, 'starts_at', new.starts_at), null);
  end if;
  perform localplus_private.schedule_reminders(new.event_id, new.id, null);
  return null;
end
$$;

revoke all on function localplus_private.event_occurrences_notify() from public, anon, authenticated, service_role;
