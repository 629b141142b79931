-- A one-off event's registrations share one pool of places.
--
-- Every event has occurrences; a one-off event has one, with the event's id. A registration naming it
-- was counted against that occurrence (its capacity: the event's) while registrations without one
-- were counted against the event, so the two pools together let in twice the event's capacity, by
-- SQL or by the API (`POST .../participants {"occurrence_id": <the event's id>}`). Now the trigger
-- stores a one-off event's registrations without an occurrence, whatever they name, and the ones
-- already stored naming it are moved to the event (without the trigger: a going registration cannot
-- change occurrence through it, and nothing but the column changes). Places already over capacity
-- stay taken; nobody is dropped.
--
-- Recurring events keep their design (README, Recurrence): series-wide registrations count against
-- the event's capacity, each occurrence's against its own.

create or replace function localplus_private.event_participants_before_write() returns trigger
  language plpgsql security definer
  set search_path = ''
  as $$
declare
  v_capacity integer;
  v_one_off boolean;
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
  if tg_op = 'UPDATE' and new.occurrence_id is distinct from old.occurrence_id and old.status in ('going', 'attended') then
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

revoke all on function localplus_private.event_participants_before_write() from public, anon, authenticated, service_role;

alter table public.event_participants disable trigger user;
update public.event_participants p set occurrence_id = null
  from public.events e
 where e.id = p.event_id and e.recurrence_rrule is null and p.occurrence_id is not null;
alter table public.event_participants enable trigger user;
