"""Database plumbing: the declarative base, column types, the engine and sessions."""
