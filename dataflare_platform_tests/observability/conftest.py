from dataflare_platform_tests.observability.fixtures import metrics_dir

__all__ = ["metrics_dir"]
