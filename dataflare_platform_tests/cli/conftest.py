"""CLI tests use the shared real receivers (alert notifications go somewhere real)."""

from dataflare_platform_tests.receivers import http_receiver  # noqa: F401
