"""The authenticating front of the web UI and GraphQL API: every request reaches
dagster-webserver only through it (identity, Host/Origin checks, mutations only by POST,
authorization of each mutation)."""
