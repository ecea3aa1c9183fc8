"""The ``dataflare`` command line (entry point ``dataflare_platform.cli:app``).

One module per command group; ``_common`` holds what they share: the consoles, the home
and web server options, JSON printing and the one error boundary.
"""

from dataflare_platform.cli.main import app

__all__ = ["app"]
