-- Search lists a series until its last occurrence ends (the event's own ends_at is its first
-- occurrence's), and the city and business feeds list events with an occurrence still to come: both
-- ask whether an event has an occurrence ending after now, which (event_id, starts_at, id) answers
-- only by reading the series' past occurrences first. This answers it in one index probe.
create index if not exists event_occurrences_event_ends_idx on public.event_occurrences (event_id, ends_at);
