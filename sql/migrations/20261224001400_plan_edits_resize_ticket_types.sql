-- A seating plan's edit changes what its events' seated ticket types sell.
--
-- A seated type's inventory is counted from the plan by its BEFORE trigger
-- (ticket_types_seat_category) whenever the type is written, and a plan edit or an event's change of
-- plan touches the types for that. But the buckets the tickets are sold from were re-spread only by
-- `after update of inventory`, which fires for statements that name the column, not for a value a
-- BEFORE trigger changed: a standing area made smaller kept selling its old capacity (oversold), and
-- seats added to a plan could be held but never paid for. The trigger now fires on every update and
-- re-spreads whenever the inventory changed (ticket_types_split compares old and new), which also
-- refuses an area smaller than what is sold and held in it (400 INVENTORY_TAKEN).
drop trigger if exists ticket_types_split on public.ticket_types;
create trigger ticket_types_split after insert or update on public.ticket_types
  for each row execute function localplus_private.ticket_types_split();
