"""Alerting tests use the shared real receivers."""

from dataflare_platform_tests.receivers import (  # noqa: F401
    Clock,
    clock,
    http_receiver,
    https_receiver,
    mtls_https_receiver,
    other_ca,
    smtp_receiver,
    smtp_tls_receiver,
)
