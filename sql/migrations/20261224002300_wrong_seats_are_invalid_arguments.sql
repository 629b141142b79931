-- Naming seats of another event when blocking them, or a seating plan of another venue for an event,
-- answered gRPC FAILED_PRECONDITION with reason INVALID_ARGUMENT (over HTTP both are 400, but the code
-- and the reason disagreed, and no field was named). Both are a client's bad argument: SQLSTATE 22023
-- (invalid_parameter_value) with the column named, which localplus_common.errors turns into
-- INVALID_ARGUMENT with a field violation on `seat_ids` or `seating_plan_id`. Replaces
-- 20261224001401's block_seats and 20261214000000's events_seating_plan, otherwise unchanged.

create or replace function localplus_private.block_seats(p_event uuid, p_occurrence_key uuid, p_seats uuid[],
                                                         p_block boolean)
  returns void
  language plpgsql security definer
  set search_path = ''
  as $$
declare
  v_taken uuid[];
  v_wrong record;
begin
  if (select count(*) from public.event_seats where id = any (p_seats) and event_id = p_event)
     <> cardinality(array(select distinct unnest(p_seats))) then
    raise exception 'some of those seats are not this event''s' using errcode = '22023', column = 'seat_ids';
  end if;
  if not p_block then
    update public.seat_claims set during = tstzrange(lower(during), greatest(lower(during), least(upper(during), now())))
     where seat_id = any (p_seats) and occurrence_key = p_occurrence_key and kind = 'blocked'
       and localplus_private.seat_claim_live(during);
    return;
  end if;
  -- A category sold for the whole series is claimed under the event's id, one sold per occurrence
  -- under the occurrence's: a block under another key would stop no sale.
  select ps.category, t.occurrence_id is null as whole_series into v_wrong
    from public.event_seats es
    join public.plan_seats ps on ps.id = es.plan_seat_id
    join public.ticket_types t on t.event_id = p_event and t.seat_category = ps.category
   where es.id = any (p_seats)
     and case when t.occurrence_id is null then p_occurrence_key <> p_event
              else not exists (select 1 from public.event_occurrences o where o.id = p_occurrence_key and o.event_id = p_event)
         end
   limit 1;
  if found then
    raise exception '% seats are sold %', v_wrong.category,
      case when v_wrong.whole_series then 'for the whole series: block them without occurrence_id'
           else 'per occurrence: name the occurrence_id to block them for' end
      using errcode = 'P0001', hint = 'SEAT_CATEGORY_SOLD_OTHERWISE';
  end if;
  insert into public.seat_claims (seat_id, occurrence_key, kind, during)
  select s.id, p_occurrence_key, 'blocked', tstzrange(clock_timestamp(), null)
    from (select distinct unnest(p_seats) as id) s
   where not exists (select 1 from public.seat_claims c where c.seat_id = s.id and c.occurrence_key = p_occurrence_key
                        and c.kind = 'blocked' and localplus_private.seat_claim_live(c.during))
   order by s.id;
exception when exclusion_violation then
  select array_agg(c.seat_id) into v_taken from public.seat_claims c
   where c.seat_id = any (p_seats) and c.occurrence_key = p_occurrence_key and c.kind <> 'blocked'
     and localplus_private.seat_claim_live(c.during);
  raise exception 'these seats are held or sold: %', localplus_private.seat_names(v_taken)
    using errcode = 'LP409', hint = 'SEAT_UNAVAILABLE';
end
$$;

create or replace function localplus_private.events_seating_plan() returns trigger
  language plpgsql security definer
  set search_path = ''
  as $$
declare
  v_busy uuid[];
begin
  if tg_op = 'UPDATE' and new.seating_plan_id is not distinct from old.seating_plan_id then
    return null;
  end if;
  if new.seating_plan_id is not null and not exists (
       select 1 from public.seating_plans where id = new.seating_plan_id and venue_id = new.venue_id) then
    raise exception 'seating_plan_id must be a seating plan of the event''s venue'
      using errcode = '22023', column = 'seating_plan_id';
  end if;
  if tg_op = 'UPDATE' then
    select array_agg(distinct c.seat_id) into v_busy
      from public.seat_claims c join public.event_seats es on es.id = c.seat_id
     where es.event_id = new.id and c.kind <> 'blocked' and localplus_private.seat_claim_live(c.during);
    if v_busy is not null then
      raise exception 'these seats are held or sold, so the plan cannot change: %', localplus_private.seat_names(v_busy)
        using errcode = 'LP409', hint = 'SEATS_IN_USE';
    end if;
    delete from public.event_seats where event_id = new.id;
  end if;
  if new.seating_plan_id is not null then
    insert into public.event_seats (event_id, plan_seat_id)
    select new.id, ps.id from public.plan_seats ps where ps.plan_id = new.seating_plan_id;
  end if;
  update public.ticket_types set updated_at = now() where event_id = new.id and seat_category is not null;
  return null;
end
$$;

revoke all on function localplus_private.block_seats(uuid, uuid, uuid[], boolean), localplus_private.events_seating_plan()
  from public, anon, authenticated, service_role;
grant execute on function localplus_private.block_seats(uuid, uuid, uuid[], boolean) to service_role;
