"""A tenant's own mailbox: its settings, its state machine, and the test mail that activates it."""
