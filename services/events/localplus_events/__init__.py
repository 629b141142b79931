"""The events service: events, participants and per-event permissions."""
