"""The developer portal (issue 20 §5): static pages generated from the registry's verified
metadata (docs/portal.md). Data plane: no Dagster."""
