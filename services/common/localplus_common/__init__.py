"""What the events, ticketing and recurrence services share: config, auth, the request
transaction, error mapping and server bootstrap."""
