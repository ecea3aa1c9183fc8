"""A registry folder served over HTTP on loopback, for the benchmark and the tests.

A TUF registry is static files, so any static server will do (docs/marketplace.md); this
is the standard library's, bound to 127.0.0.1 on a free port, quiet, in a thread. It is
not a production server: deployments put the folder behind their own web server.
"""

from __future__ import annotations

import functools
import http.server
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        """Requests are neither benchmark nor test output."""


@contextmanager
def served_directory(directory: Path) -> Iterator[str]:
    """Serve ``directory`` on a free loopback port while the block runs; yields its URL."""
    handler = functools.partial(_Quiet, directory=str(directory))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, name="df-registry-http", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
