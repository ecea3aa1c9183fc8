"""Who is acting and what they may do: principals, the resources they act on, and the
decisions an authorizer makes. Pure data plane: nothing here imports Dagster, so the web
front, the run coordinator and the audit log share one vocabulary."""
