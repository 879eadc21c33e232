"""Google and Microsoft sign-in: the authorization-code flow with PKCE, and the tokens it yields."""
