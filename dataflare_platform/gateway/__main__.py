"""``python -m dataflare_platform.gateway``: the front process ``dataflare ui`` starts."""

from __future__ import annotations

import argparse
from pathlib import Path

from dataflare_platform.gateway.serve import serve
from dataflare_platform.gateway.settings import FrontSettings
from dataflare_platform.home import ProjectHome


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m dataflare_platform.gateway")
    parser.add_argument("--home", type=Path, required=True)
    parser.add_argument("--workspace", type=Path, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=3000)
    parser.add_argument("--public-host", action="append", default=[])
    parser.add_argument("--tls-cert", type=Path)
    parser.add_argument("--tls-key", type=Path)
    parser.add_argument("--no-daemon", action="store_true")
    parser.add_argument("--login-config", type=Path)
    args = parser.parse_args(argv)
    settings = FrontSettings(
        host=args.host,
        port=args.port,
        public_hosts=tuple(args.public_host),
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
    )
    serve(
        settings,
        ProjectHome.resolve(args.home),
        args.workspace,
        daemon=not args.no_daemon,
        login_config=args.login_config,
    )


if __name__ == "__main__":
    main()
