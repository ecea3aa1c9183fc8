"""The preview server: loopback only unless allowed, the folder's files, safe headers."""

from __future__ import annotations

import threading
import urllib.error
import urllib.request

import pytest

from dataflare_platform.errors import InvalidInputError, NotFoundError
from dataflare_platform.portal.serve import is_loopback, make_server


def test_loopback_addresses():
    assert all(map(is_loopback, ["127.0.0.1", "127.1.2.3", "::1", "localhost"]))
    assert not any(map(is_loopback, ["0.0.0.0", "::", "192.0.2.1", "example.org", ""]))


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.0.2.1", "portal.example.org"])
def test_a_non_loopback_bind_is_refused_before_binding(tmp_path, host):
    (tmp_path / "index.html").write_text("<p>x</p>")
    with pytest.raises(InvalidInputError, match="not a loopback address"):
        make_server(tmp_path, host, 0)


def test_a_folder_that_was_not_built_is_refused(tmp_path):
    with pytest.raises(NotFoundError, match="portal build"):
        make_server(tmp_path, "127.0.0.1", 0)


def test_serves_the_folder_with_nosniff_and_csp(tmp_path):
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "index.html").write_text("<p>catalogue</p>")
    (tmp_path / "secret.txt").write_text("outside")
    server = make_server(tmp_path / "site", "127.0.0.1", 0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        host, port = server.server_address[:2]
        assert host == "127.0.0.1"
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/") as response:
            assert response.read() == b"<p>catalogue</p>"
            assert response.headers["X-Content-Type-Options"] == "nosniff"
            assert "script-src 'self'" in response.headers["Content-Security-Policy"]
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/../secret.txt")
        assert err.value.code == 404
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
