"""The ticketing service: ticket types now; orders, payments and check-in in Phase 2."""
