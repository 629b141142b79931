-- Publishing an event schedules the reminders of registrations for one of its occurrences too.
--
-- Registrations made before an event is published (editors may register people on a draft) got
-- their reminders when it was published, but only the series-wide ones: people registered for one
-- occurrence of a recurring draft were never reminded. The rest of the function is as in
-- 20261213000000_notifications.sql.

create or replace function localplus_private.events_notify() returns trigger
  language plpgsql security definer
  set search_path = ''
  as $$
declare
  v_users uuid[];
  v_occurrence uuid;
begin
  if new.status = 'cancelled' and old.status <> 'cancelled' then
    select array_agg(p.user_id) into v_users from public.event_participants p
     where p.event_id = new.id and p.status in ('going', 'waitlisted');
    if v_users is not null then
      perform localplus_private.notify('event_cancelled', v_users, new.id, null, null, '{}', null);
    end if;
    update public.notifications set status = 'cancelled', updated_at = now()
     where event_id = new.id and kind = 'event_reminder' and status = 'pending';
  elsif old.status = 'published' and (new.starts_at <> old.starts_at or new.timezone <> old.timezone) then
    -- (Still published, or back in review for another change made with it: the move is news either way.)
    if new.starts_at <> old.starts_at then
      select array_agg(p.user_id) into v_users from public.event_participants p
       where p.event_id = new.id and p.occurrence_id is null and p.status in ('going', 'waitlisted');
      if v_users is not null then
        perform localplus_private.notify('event_moved', v_users, new.id, null, null,
          jsonb_build_object('previous_starts_at', old.starts_at, 'starts_at', new.starts_at), null);
      end if;
    end if;
    perform localplus_private.schedule_reminders(new.id, null, null);
    if new.timezone <> old.timezone then
      for v_occurrence in select o.id from public.event_occurrences o where o.event_id = new.id loop
        perform localplus_private.schedule_reminders(new.id, v_occurrence, null);
      end loop;
    end if;
  elsif new.status = 'published' and old.status <> 'published' then
    -- Registrations made before publication (e.g. by editors) get their reminders now, those for
    -- one occurrence too.
    perform localplus_private.schedule_reminders(new.id, null, null);
    for v_occurrence in select distinct p.occurrence_id from public.event_participants p
                         where p.event_id = new.id and p.occurrence_id is not null and p.status = 'going' loop
      perform localplus_private.schedule_reminders(new.id, v_occurrence, null);
    end loop;
  end if;
  return null;
end
$$;

revoke all on function localplus_private.events_notify() from public, anon, authenticated, service_role;
