"""The recurrence service: occurrences of events (one-off events now, RRULEs in Phase 3)."""
