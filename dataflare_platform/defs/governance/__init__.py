"""Governance domain: data-quality and compliance checks per governed dataset
(``datasets/<name>/defs.yaml``: GovernedDatasetComponent instances), retention, the audit
trail and alerting (``definitions.py``)."""
