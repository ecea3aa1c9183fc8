"""`dataflare bench plugins --suite marketplace` (here, not in ``bench``: the benchmarks
sit beside the marketplace in the layers, so cannot import it).

The signed registry's costs (issue 20, target: < 5 ms added per plugin load with warm
metadata), measured in one process against a registry served over HTTP on loopback:

* ``install_ms``: ``RegistryClient.install`` into a fresh client (first TUF refresh from
  the trusted root, module download, lock and view written);
* ``verify_ms``: ``RegistryClient.verify`` (a TUF refresh over HTTP, digests re-checked);
* ``load_check_cold_ms``: the runtime's load check when its view is stale (a refresh
  through TUF, then the check); ``load_check_warm_us``: the same check on the verified
  view (no network, what nearly every load pays);
* ``load``: ``PluginRegistry.load`` of the installed currency plugin (pin check, manifest,
  instance from the compile cache) with and without the marketplace check, interleaved
  A/B in the same process; the added cost as a ratio and in ms per load.

Medians of ``repeat`` measurements. ``run()`` returns one JSON-able dict."""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from dataflare_platform.marketplace.client import RegistryClient
from dataflare_platform.marketplace.loadcheck import MarketplaceLoadCheck
from dataflare_platform.marketplace.repository import (
    TOP_ROLES,
    Repository,
    generate_key_file,
    load_signer,
)
from dataflare_platform.marketplace.served import served_directory
from dataflare_platform.plugins.build import SAMPLES_DIR, build_plugin
from dataflare_platform.plugins.registry import PluginRegistry, RegistryConfig


def _ms(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return (time.perf_counter() - start) * 1000


def _registry(tmp: Path, wasm: Path) -> Repository:
    keys = tmp / "keys"
    for role in (*TOP_ROLES, "acme"):
        generate_key_file(keys / f"{role}.pem")
    repo = Repository(
        tmp / "repo", signers={r: [load_signer(keys / f"{r}.pem")] for r in TOP_ROLES}
    )
    repo.init()
    publisher = load_signer(keys / "acme.pem")
    repo.add_publisher("acme", publisher.public_key)
    repo.publish(
        "acme",
        "currency",
        "1.0.0",
        wasm.read_bytes(),
        wasm.with_suffix(".json").read_bytes(),
        publisher,
    )
    return repo


def run(repeat: int = 20, loads: int = 200) -> dict[str, object]:
    with tempfile.TemporaryDirectory(prefix="bench-marketplace-") as scratch:
        tmp = Path(scratch)
        wasm = build_plugin(SAMPLES_DIR / "currency", tmp / "built")
        repo = _registry(tmp, wasm)
        root = (repo.metadata_dir / "1.root.json").read_bytes()
        with served_directory(repo.path) as url:

            def client(i: int) -> RegistryClient:
                return RegistryClient(
                    url,
                    state_dir=tmp / f"c{i}" / "state",
                    plugins_dir=tmp / f"c{i}" / "plugins",
                    trusted_root=root,
                )

            install = [
                _ms(lambda i=i: client(i).install("acme/currency", "1.0.0")) for i in range(repeat)
            ]
            main = client(0)
            verify = [_ms(lambda: main.verify("currency")) for _ in range(repeat)]
            sha = main.verify("currency").sha256
            manifest = (main.plugins_dir / "currency.json").read_bytes()

            now = [datetime.now(UTC)]
            check = MarketplaceLoadCheck(
                main.state_dir, main.plugins_dir, refresh_s=60, clock=lambda: now[0]
            )

            def cold() -> None:
                now[0] += timedelta(seconds=61)  # the view is stale: refresh first
                check("currency", sha, manifest)

            cold_ms = [_ms(cold) for _ in range(repeat)]
            check("currency", sha, manifest)
            warm_us = [_ms(lambda: check("currency", sha, manifest)) * 1000 for _ in range(loads)]

            config = RegistryConfig(
                cache_dir=tmp / "cache", lock_files=(main.lock_path,), allow_unpinned=False
            )
            baseline = PluginRegistry(main.plugins_dir, config)
            checked = PluginRegistry(main.plugins_dir, config, load_checks=[check])
            baseline.load("currency")  # compile cache warm for both sides
            checked.load("currency")
            plain, verified = [], []
            for _ in range(loads):  # interleaved A/B
                plain.append(_ms(lambda: baseline.load("currency")))
                verified.append(_ms(lambda: checked.load("currency")))
    base, with_check = statistics.median(plain), statistics.median(verified)
    return {
        "benchmark": "marketplace",
        "transport": "http 127.0.0.1",
        "repeat": repeat,
        "loads": loads,
        "install_ms": round(statistics.median(install), 2),
        "verify_ms": round(statistics.median(verify), 2),
        "load_check_cold_ms": round(statistics.median(cold_ms), 2),
        "load_check_warm_us": round(statistics.median(warm_us), 1),
        "load": {
            "baseline_ms": round(base, 3),
            "with_verification_ms": round(with_check, 3),
            "added_ms": round(with_check - base, 3),
            "ratio": round(with_check / base, 3),
            "target_added_ms": 5.0,
        },
    }
