"""Webhook events: a durable table, delivered at-least-once with an HMAC signature."""
