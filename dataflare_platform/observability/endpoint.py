"""The one scrape endpoint: ``GET /metrics`` sums every worker's files (loopback only).

Runs in its own process (``dataflare metrics serve``) so it lives longer than any
worker and never holds metrics of its own: it only reads the multiprocess directory.
Each scrape first reaps workers whose process is gone (``prometheus.reap_dead``).
"""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Self

from dataflare_platform.observability.prometheus import exposition, private_dir

LOOPBACK = "127.0.0.1"
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class LoopbackServer:
    """A threaded HTTP server on 127.0.0.1 only, served from a daemon thread: the shape
    shared by the scrape endpoint and the Alertmanager receiver (``compliance``)."""

    path = "/"
    thread_name = "df-http"
    server: ThreadingHTTPServer

    def _bind(self, handler: type[BaseHTTPRequestHandler], port: int) -> None:
        self.server = ThreadingHTTPServer((LOOPBACK, port), handler)
        self.server.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}{self.path}"

    def start(self) -> Self:
        self._thread = threading.Thread(
            target=self.server.serve_forever, name=self.thread_name, daemon=True
        )
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        self.server.serve_forever()

    def serve_until_interrupted(self) -> None:
        """Serve in this thread until Ctrl-C (the CLI commands' foreground mode)."""
        try:
            self.server.serve_forever()
        except KeyboardInterrupt:
            pass
        finally:
            self.server.server_close()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class MetricsServer(LoopbackServer):
    """``start()`` binds 127.0.0.1:``port`` (0: a free port, see ``url``)."""

    path = "/metrics"
    thread_name = "df-metrics"

    def __init__(self, directory: Path, port: int = 0) -> None:
        self.directory = private_dir(directory)
        directory_ = self.directory

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path.split("?", 1)[0] != "/metrics":
                    self.send_error(404, "only /metrics")
                    return
                try:
                    body = exposition(directory_)
                except Exception as err:  # a torn file must not kill the endpoint
                    self.send_error(500, type(err).__name__)
                    return
                self.send_response(200)
                self.send_header("Content-Type", CONTENT_TYPE)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                pass  # scrapes every few seconds: no access log on stderr

        self._bind(Handler, port)
