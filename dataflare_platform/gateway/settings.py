"""How the front is reached: where it binds, the names it answers to, TLS."""

from __future__ import annotations

from pathlib import Path

from pydantic import field_validator

from dataflare_platform.gateway.sessions import DEFAULT_TTL_S
from dataflare_platform.models import StrictModel

LOOPBACK_NAMES = ("127.0.0.1", "localhost", "[::1]")
WILDCARD_BINDS = ("0.0.0.0", "::", "")


class FrontSettings(StrictModel):
    """The front's settings; the Host allow-list is the loopback names at ``port`` plus
    the bind address (unless a wildcard) plus ``public_hosts``."""

    host: str = "127.0.0.1"
    port: int = 3000
    public_hosts: tuple[str, ...] = ()
    tls_cert: Path | None = None
    tls_key: Path | None = None
    session_ttl_s: float = DEFAULT_TTL_S
    max_body_bytes: int = 16 * 1024 * 1024

    @field_validator("public_hosts")
    @classmethod
    def _names(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for name in value:
            if not name or any(c in name for c in "/ @\\?#"):
                raise ValueError(f"{name!r} is not a host name (host or host:port)")
        return tuple(n.lower() for n in value)

    @property
    def tls(self) -> bool:
        return self.tls_cert is not None

    @property
    def scheme(self) -> str:
        return "https" if self.tls else "http"

    def host_allowlist(self) -> frozenset[str]:
        names = set(LOOPBACK_NAMES)
        if self.host not in WILDCARD_BINDS:
            names.add(f"[{self.host}]" if ":" in self.host else self.host)
        allowed = {f"{n.lower()}:{self.port}" for n in names}
        for name in self.public_hosts:
            has_port = name.rsplit(":", 1)[-1].isdigit() and not name.endswith("]")
            allowed.add(name if has_port else f"{name}:{self.port}")
            if not has_port and self.port == (443 if self.tls else 80):
                allowed.add(name)
        return frozenset(allowed)

    def origin_allowlist(self) -> frozenset[str]:
        return frozenset(f"{self.scheme}://{h}" for h in self.host_allowlist())

    def public_origin(self) -> str:
        """Where browsers reach the front (redirect URIs): the first public host, else
        the loopback name."""
        if self.public_hosts:
            first = self.public_hosts[0]
            has_port = first.rsplit(":", 1)[-1].isdigit() and not first.endswith("]")
            return f"{self.scheme}://{first if has_port else f'{first}:{self.port}'}"
        return f"{self.scheme}://127.0.0.1:{self.port}"
