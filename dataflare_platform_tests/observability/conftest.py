from dataflare_platform_tests.observability.fixtures import metrics_dir
from dataflare_platform_tests.receivers import http_receiver

__all__ = ["http_receiver", "metrics_dir"]
