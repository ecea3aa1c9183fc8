"""Ways to establish who someone is: local users (argon2 passwords, TOTP), service tokens,
OpenID Connect and LDAP. Each yields an access.principal.Principal; nothing here imports
Dagster."""
