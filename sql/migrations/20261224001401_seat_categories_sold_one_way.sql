-- A recurring event's seat is sold once for each occurrence.
--
-- A seat's claims are kept apart per occurrence key (the claiming ticket type's occurrence, else the
-- event: 20261214000000_seating.sql), so a category sold both by a ticket type for the whole series
-- (key: the event) and by one for an occurrence (key: the occurrence) sold the same seat twice for
-- that occurrence, and a seat blocked under the one key stayed on sale under the other. Now a
-- category of an event is sold either by one type for the whole series or by types for occurrences
-- (400 SEAT_CATEGORY_SOLD_OTHERWISE), and a block names the key its category is sold under: none
-- (the series) for a category sold for the whole series, an occurrence for one sold per occurrence.

create or replace function localplus_private.ticket_types_seat_keys() returns trigger
  language plpgsql security definer
  set search_path = ''
  as $$
declare
  v_other text;
begin
  if new.seat_category is null then
    return new;
  end if;
  -- Writers of one event's category take turns, so two at once cannot each miss the other.
  perform pg_advisory_xact_lock(hashtextextended('seat_category ' || new.event_id::text || ' ' || new.seat_category, 0));
  select t.name into v_other from public.ticket_types t
   where t.event_id = new.event_id and t.seat_category = new.seat_category and t.id <> new.id
     and (t.occurrence_id is null) <> (new.occurrence_id is null)
   limit 1;
  if found then
    raise exception '% seats are sold % by %: one category is sold for the whole series or per occurrence, not both',
      new.seat_category, case when new.occurrence_id is null then 'per occurrence' else 'for the whole series' end,
      v_other
      using errcode = 'P0001', hint = 'SEAT_CATEGORY_SOLD_OTHERWISE';
  end if;
  return new;
end
$$;

drop trigger if exists ticket_types_seat_keys on public.ticket_types;
create trigger ticket_types_seat_keys before insert or update of seat_category, occurrence_id on public.ticket_types
  for each row execute function localplus_private.ticket_types_seat_keys();

-- As in 20261214000000_seating.sql, and a block is refused under a key its seats are not sold under.
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
    raise exception 'some of those seats are not this event''s' using errcode = 'P0001', hint = 'INVALID_ARGUMENT';
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

revoke all on function localplus_private.ticket_types_seat_keys(), localplus_private.block_seats(uuid, uuid, uuid[], boolean)
  from public, anon, authenticated, service_role;
grant execute on function localplus_private.block_seats(uuid, uuid, uuid[], boolean) to service_role;
