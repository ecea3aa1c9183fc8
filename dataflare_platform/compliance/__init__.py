"""Compliance: PII handling, data contracts, freshness, retention and the audit log."""
