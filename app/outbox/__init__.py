"""The durable outbox: intake, routing, the delivery worker and its retry policy."""
