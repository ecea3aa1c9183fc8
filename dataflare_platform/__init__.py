"""DataFlare Platform."""
