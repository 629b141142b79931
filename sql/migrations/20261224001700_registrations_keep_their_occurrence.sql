-- A registration keeps the occurrence it was made for, whatever its status, until it is cancelled.
--
-- The trigger refused moving a going (or attended) registration to another occurrence, but a
-- waitlisted or interested one could be moved through Supabase's REST, where the API refuses it
-- (400): a waitlisted person then stood in another occurrence's queue at their old place, ahead of
-- those who registered for it, without its capacity checks. Only a cancelled registration may name
-- another occurrence, which is registering again (the API's POST revives a cancelled row).
-- The trigger is the one of 20261224001500 with that condition changed.

create or replace function localplus_private.event_participants_before_write() returns trigger
  language plpgsql security definer
  set search_path = ''
  as $$
declare
  v_capacity integer;
  v_one_off boolean;
  v_series boolean;
  v_taken integer;
  v_waiting boolean;
begin
  if tg_op = 'DELETE' then
    perform 1 from public.events where id = old.event_id for no key update;
    return old;
  end if;
  -- A request's timestamps are the server's, whatever it says: status_changed_at orders the waitlist.
  if tg_op = 'INSERT' then
    if localplus_private.in_request() then
      new.created_at := now();
      new.status_changed_at := clock_timestamp();
    end if;
  else
    new.event_id := old.event_id;
    new.user_id := old.user_id;
    if localplus_private.in_request() then
      new.created_at := old.created_at;
      new.status_changed_at := old.status_changed_at;
    end if;
    if new.status is distinct from old.status and new.status_changed_at is not distinct from old.status_changed_at then
      new.status_changed_at := clock_timestamp();
    end if;
  end if;
  new.updated_at := now();
  select capacity, recurrence_rrule is null into v_capacity, v_one_off
    from public.events where id = new.event_id for no key update;
  -- A one-off event's only occurrence is the event: a registration naming it is the event's, counted
  -- once against the event's capacity (as its own, it had a second pool of the same size).
  if v_one_off then
    new.occurrence_id := null;
  end if;
  v_series := new.occurrence_id is null and not v_one_off;
  if tg_op = 'UPDATE' and new.occurrence_id is distinct from old.occurrence_id and old.status <> 'cancelled' then
    raise exception 'cancel the registration before registering for another occurrence'
      using errcode = 'P0001', hint = 'INVALID_STATE';
  end if;
  -- Only asking for a place, or for more places, needs a free one.
  if new.status <> 'going'
     or (tg_op = 'UPDATE' and old.status = 'going' and new.guest_count <= old.guest_count) then
    return new;
  end if;
  if new.occurrence_id is not null then
    select coalesce(o.capacity, v_capacity) into v_capacity from public.event_occurrences o
     where o.id = new.occurrence_id and o.event_id = new.event_id for no key update;
    if not found or exists (select 1 from public.event_occurrences o
                             where o.id = new.occurrence_id and o.status = 'cancelled') then
      raise exception 'that occurrence does not take place' using errcode = 'P0001', hint = 'OCCURRENCE_CANCELLED';
    end if;
  end if;
  -- A series-wide registration also needs a place in each occurrence, which may have a capacity of
  -- its own when the event has none.
  if v_capacity is null and not v_series then
    return new;
  end if;
  -- Someone who asked earlier for the same places is still waiting: a row already on the waitlist
  -- waits behind the ones ahead of it, anyone else behind all of them.
  select exists (
    select 1 from public.event_participants w
     where w.event_id = new.event_id and w.status = 'waitlisted' and w.user_id <> new.user_id
       and w.occurrence_id is not distinct from new.occurrence_id
       and (tg_op = 'INSERT' or old.status <> 'waitlisted'
            or (w.status_changed_at, w.user_id) < (old.status_changed_at, old.user_id))
  ) into v_waiting;
  -- Everyone else's places: this row's old version is counted in the total.
  v_taken := case when new.occurrence_id is null then localplus_private.event_seats_taken(new.event_id)
                  else localplus_private.occurrence_seats_taken(new.occurrence_id) end
             - case when tg_op = 'UPDATE' and old.status in ('going', 'attended')
                         and old.occurrence_id is not distinct from new.occurrence_id
                    then 1 + old.guest_count else 0 end;
  if v_waiting
     or v_taken + 1 + new.guest_count > v_capacity
     or (v_series and not localplus_private.series_fits(new.event_id, v_capacity, v_taken + 1 + new.guest_count)) then
    if tg_op = 'UPDATE' and old.status = 'going' then
      raise exception '%', case when v_waiting then 'others are waiting for places; no guests can be added now'
                                else format('not enough capacity left for %s guests', new.guest_count) end
        using errcode = 'P0001', hint = 'CAPACITY_EXCEEDED';
    end if;
    new.status := 'waitlisted';
    -- Asking again keeps one's place in the queue.
    new.status_changed_at := case when tg_op = 'UPDATE' and old.status = 'waitlisted' then old.status_changed_at
                                  else clock_timestamp() end;
  end if;
  return new;
end
$$;

revoke all on function localplus_private.event_participants_before_write() from public, anon, authenticated, service_role;
