"""Local development and test tooling: embedded Postgres, Envoy gateway, localstripe, process supervision."""
