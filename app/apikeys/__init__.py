"""API keys: made by the CLI, stored hashed, bound to one tenant or to all."""
