"""Serve a built portal folder over HTTP on loopback.

The portal is static files, so this is ``http.server`` restricted to one directory, with
two guards: the bind address must be a loopback address unless the operator explicitly
allows another (the pages list what a registry contains; publishing them is a decision),
and responses carry ``nosniff`` and a restrictive CSP besides the pages' own.
"""

from __future__ import annotations

import functools
import http.server
import ipaddress
import socket
from pathlib import Path

from dataflare_platform.errors import InvalidInputError, NotFoundError


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class _Handler(http.server.SimpleHTTPRequestHandler):
    def end_headers(self) -> None:
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header(
            "Content-Security-Policy",
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:",
        )
        self.send_header("Cache-Control", "no-cache")
        super().end_headers()

    def log_message(self, format: str, *args: object) -> None:
        """Quiet: request lines are not useful on the terminal of a local preview."""


def make_server(
    directory: Path, host: str = "127.0.0.1", port: int = 0, allow_remote: bool = False
) -> http.server.ThreadingHTTPServer:
    """A server over ``directory`` (not yet serving); ``port`` 0 picks a free one."""
    directory = Path(directory)
    if not (directory / "index.html").is_file():
        raise NotFoundError(f"{directory} has no index.html: run `dataflare portal build` first")
    if not is_loopback(host) and not allow_remote:
        raise InvalidInputError(
            f"refusing to serve the portal on {host!r}: not a loopback address"
            " (pass --allow-remote to publish it on the network)"
        )
    handler = functools.partial(_Handler, directory=str(directory))
    server_class = http.server.ThreadingHTTPServer
    if ":" in host:

        class V6(http.server.ThreadingHTTPServer):
            address_family = socket.AF_INET6

        server_class = V6
    return server_class((host, port), handler)
