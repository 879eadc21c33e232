"""Sender drivers and what they share: the message builder, address rules, failure classes.

Nothing here touches the database: a driver gets a message and its validated configuration and
returns a result or raises one of the failures of `app.senders.base`.
"""
