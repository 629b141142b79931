-- A series-wide registration takes a place in every occurrence of a recurring event.
--
-- Series-wide registrations (no occurrence) were counted against the event's capacity and
-- registrations for one occurrence against that occurrence's (its own capacity, else the event's),
-- as two pools: an occurrence could hold the event's capacity of series-wide people and as many
-- again who registered for it alone, twice the room. Now:
-- - an occurrence's places taken are its own registrations and every series-wide one
--   (occurrence_seats_taken), so a registration for one occurrence needs a place left by both;
-- - a series-wide registration needs, besides a place of the event's capacity, a place in every
--   occurrence still to come (series_fits), else it is waitlisted;
-- - a place freed in one pool can let in the head of the other's waitlist: a series-wide place
--   freed frees one in every occurrence, one freed in an occurrence (or an occurrence no longer
--   taking place) may be the room a series-wide registration waited for.
-- The trigger and promote_waitlist are the ones of 20261224000600 and 20261224000300, with these
-- checks added; places already over capacity stay taken, nobody is dropped.

create or replace function localplus_private.occurrence_seats_taken(p_occurrence_id uuid) returns integer
  language sql stable security definer
  set search_path = ''
  as $$
    select coalesce((select sum(1 + guest_count)::integer from public.event_participants
                      where occurrence_id = p_occurrence_id and status in ('going', 'attended')), 0)
         + coalesce((select localplus_private.event_seats_taken(o.event_id) from public.event_occurrences o
                      where o.id = p_occurrence_id), 0)
  $$;

-- Whether every occurrence of the event still to come has room for p_series_places series-wide
-- places (all of them, the one asked for included) besides its own registrations.
create or replace function localplus_private.series_fits(p_event_id uuid, p_event_capacity integer, p_series_places integer)
  returns boolean
  language sql stable security definer
  set search_path = ''
  as $$
    select not exists (
      select 1 from public.event_occurrences o
        left join (select occurrence_id, sum(1 + guest_count)::integer as taken from public.event_participants
                    where event_id = p_event_id and occurrence_id is not null and status in ('going', 'attended')
                    group by occurrence_id) own on own.occurrence_id = o.id
       where o.event_id = p_event_id and o.status = 'scheduled' and o.starts_at > now()
         and coalesce(own.taken, 0) + p_series_places > coalesce(o.capacity, p_event_capacity))
  $$;

create or replace function localplus_private.promote_waitlist(p_event_id uuid, p_occurrence_id uuid) returns integer
  language plpgsql security definer
  set search_path = ''
  as $$
declare
  v_capacity integer;
  v_series boolean;
  v_taken integer;
  v_promoted integer := 0;
  v_next record;
begin
  select capacity, p_occurrence_id is null and recurrence_rrule is not null into v_capacity, v_series
    from public.events where id = p_event_id for no key update;
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
    exit when v_series and not localplus_private.series_fits(p_event_id, v_capacity, v_taken + 1 + v_next.guest_count);
    update public.event_participants set status = 'going'
     where event_id = p_event_id and user_id = v_next.user_id;
    v_taken := v_taken + 1 + v_next.guest_count;
    v_promoted := v_promoted + 1;
  end loop;
  return v_promoted;
end
$$;

-- The waitlists a freed place of the given pool may let in, besides its own: a series-wide place is a
-- place in every occurrence, an occurrence's place may be the one a series-wide registration lacked.
create or replace function localplus_private.promote_other_waitlists(p_event_id uuid, p_occurrence_id uuid)
  returns void
  language plpgsql security definer
  set search_path = ''
  as $$
declare
  v_occurrence uuid;
begin
  if not exists (select 1 from public.events where id = p_event_id and recurrence_rrule is not null) then
    return;
  end if;
  if p_occurrence_id is not null then
    perform localplus_private.promote_waitlist(p_event_id, null::uuid);
    return;
  end if;
  for v_occurrence in
    select distinct p.occurrence_id from public.event_participants p
     where p.event_id = p_event_id and p.status = 'waitlisted' and p.occurrence_id is not null
  loop
    perform localplus_private.promote_waitlist(p_event_id, v_occurrence);
  end loop;
end
$$;

create or replace function localplus_private.event_participants_after_write() returns trigger
  language plpgsql security definer
  set search_path = ''
  as $$
begin
  if (old.status = 'going'
      and (tg_op = 'DELETE' or new.status not in ('going', 'attended') or new.guest_count < old.guest_count))
     or (old.status = 'waitlisted'
         and (tg_op = 'DELETE' or new.status not in ('waitlisted', 'going') or new.guest_count < old.guest_count)) then
    perform localplus_private.promote_waitlist(old.event_id, old.occurrence_id);
    if old.status = 'going' then
      perform localplus_private.promote_other_waitlists(old.event_id, old.occurrence_id);
    end if;
  end if;
  return null;
end
$$;

-- An occurrence with more room, or no longer taking place, may be what a series-wide registration
-- waited for.
create or replace function localplus_private.event_occurrences_after_capacity_change() returns trigger
  language plpgsql security definer
  set search_path = ''
  as $$
begin
  if new.status = 'scheduled' then
    perform localplus_private.promote_waitlist(new.event_id, new.id);
  end if;
  perform localplus_private.promote_other_waitlists(new.event_id, new.id);
  return null;
end
$$;

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

revoke all on function localplus_private.occurrence_seats_taken(uuid),
  localplus_private.series_fits(uuid, integer, integer),
  localplus_private.promote_waitlist(uuid, uuid),
  localplus_private.promote_other_waitlists(uuid, uuid),
  localplus_private.event_participants_after_write(),
  localplus_private.event_occurrences_after_capacity_change(),
  localplus_private.event_participants_before_write()
  from public, anon, authenticated, service_role;
