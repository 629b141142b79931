-- One lock order for every write of a registration, so that no two of them deadlock.
--
-- A registration locked the event row for its seat check (in its BEFORE trigger), then bumped the
-- event's counters and analytics rows (AFTER triggers). A cancellation bumped the counters first and
-- locked the event row only afterwards, to promote the waitlist: a registration and a cancellation,
-- or two cancellations and anything that had inserted a row referencing the event, waited for each
-- other until Postgres killed one. Under a burst of cancellations, retrying four times was not
-- always enough, and callers got a 409.
--
-- Now:
-- - Every insert, update and delete of a registration locks its event row first, in the BEFORE
--   trigger, before any AFTER trigger touches counters or rollups. The order is always: the event,
--   then the occurrence, then the counters and rollups.
-- - The event and occurrence rows are locked FOR NO KEY UPDATE, not FOR UPDATE. Inserting a row that
--   references the event (a save, a notification, a day of analytics) takes FOR KEY SHARE on it
--   until commit, which FOR UPDATE waits for and FOR NO KEY UPDATE does not. FOR NO KEY UPDATE still
--   excludes every other seat check and promotion, and the event's own updates.

create or replace function localplus_private.promote_waitlist(p_event_id uuid, p_occurrence_id uuid) returns integer
  language plpgsql security definer
  set search_path = ''
  as $$
declare
  v_capacity integer;
  v_taken integer;
  v_promoted integer := 0;
  v_next record;
begin
  select capacity into v_capacity from public.events where id = p_event_id for no key update;
  if not found then
    return 0;  -- the event is being deleted
  end if;
  if p_occurrence_id is null then
    v_taken := localplus_private.event_seats_taken(p_event_id);
  else
    select coalesce(o.capacity, v_capacity) into v_capacity from public.event_occurrences o
     where o.id = p_occurrence_id and o.status = 'scheduled' for no key update;
    if not found then
      return 0;
    end if;
    v_taken := localplus_private.occurrence_seats_taken(p_occurrence_id);
  end if;
  for v_next in
    select user_id, guest_count from public.event_participants
     where event_id = p_event_id and status = 'waitlisted' and occurrence_id is not distinct from p_occurrence_id
     order by status_changed_at, user_id
  loop
    exit when v_capacity is not null and v_taken + 1 + v_next.guest_count > v_capacity;
    update public.event_participants set status = 'going'
     where event_id = p_event_id and user_id = v_next.user_id;
    v_taken := v_taken + 1 + v_next.guest_count;
    v_promoted := v_promoted + 1;
  end loop;
  return v_promoted;
end
$$;

create or replace function localplus_private.event_participants_before_write() returns trigger
  language plpgsql security definer
  set search_path = ''
  as $$
declare
  v_capacity integer;
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
    if new.occurrence_id is distinct from old.occurrence_id and old.status in ('going', 'attended') then
      raise exception 'cancel the registration before registering for another occurrence'
        using errcode = 'P0001', hint = 'INVALID_STATE';
    end if;
  end if;
  new.updated_at := now();
  select capacity into v_capacity from public.events where id = new.event_id for no key update;
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
  if v_capacity is null then
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
  if v_waiting or v_taken + 1 + new.guest_count > v_capacity then
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

drop trigger if exists event_participants_before_write on public.event_participants;
create trigger event_participants_before_write before insert or update or delete on public.event_participants
  for each row execute function localplus_private.event_participants_before_write();

revoke all on function localplus_private.promote_waitlist(uuid, uuid),
  localplus_private.event_participants_before_write()
  from public, anon, authenticated, service_role;
