"""A loopback HTTP server for client tests: a handler class answers POSTed JSON, the
server runs on its own thread for the test and is shut down after."""

from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


class JsonHandler(http.server.BaseHTTPRequestHandler):
    """Subclasses implement ``answer(request) -> (status, body)``."""

    def answer(self, request: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        raise NotImplementedError

    def do_POST(self) -> None:
        request = json.loads(self.rfile.read(int(self.headers["Content-Length"])) or b"{}")
        status, body = self.answer(request)
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args) -> None:
        pass


@contextmanager
def serving(server: http.server.ThreadingHTTPServer) -> Iterator[int]:
    """Serve ``server`` (bound to 127.0.0.1) on a thread; yields its port."""
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
