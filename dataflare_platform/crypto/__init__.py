"""Field encryption: envelope encryption of columns (AES-256-GCM, deterministic AES-SIV)
with key versions, rotation, rewrap and crypto-shredding. Data plane: no Dagster here
(docs/security.md, "Field encryption")."""
