"""``dataflare bench audit``: audit append throughput with entry authenticators against
the untagged append, same process (run by the CLI only; kept beside the log it measures,
as ``gateway/bench.py`` is beside the front).

Each side appends ``entries`` entries (one transaction each, as every enforcement point
does) to a fresh log in a temporary directory (SQLite, the embedded default; with
``postgres_url`` also to a fresh schema of that server); the sides alternate for
``repeat`` rounds and the fastest round of each counts (wall time: an append waits for
its commit). ``plain`` is the append path without the tag (``AuditLog._append`` with no
key: what every append cost before entries were authenticated), ``authenticated`` the
real ``append``; ``ratio`` is authenticated / plain throughput (1.0 = no cost). The
HMAC alone (``tag_us``) and a full ``verify`` of the authenticated log (every hash and
tag recomputed) are reported too.
"""

from __future__ import annotations

import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from dataflare_platform.compliance.audit import AuditLog
from dataflare_platform.compliance.audit_signing import EntryAuthenticator

DETAILS = {"action": "launch", "resource": {"kind": "job", "name": "nexmark_q5"}, "n": 0}


@contextmanager
def _fresh_log(base: str, key: EntryAuthenticator) -> Iterator[AuditLog]:
    """An empty log: a new SQLite file, or a new schema on the PostgreSQL server."""
    if base.startswith("postgresql"):
        import psycopg
        from sqlalchemy.engine import make_url

        schema = f"bench_audit_{uuid.uuid4().hex[:12]}"
        plain = base.replace("+psycopg", "")
        with psycopg.connect(plain, autocommit=True) as conn:
            conn.execute(f'CREATE SCHEMA "{schema}"')
        url = make_url(base).update_query_dict({"options": f"-csearch_path={schema}"})
        log = AuditLog(url.render_as_string(hide_password=False), entry_key=key)
        try:
            yield log
        finally:
            log.close()
            with psycopg.connect(plain, autocommit=True) as conn:
                conn.execute(f'DROP SCHEMA "{schema}" CASCADE')
        return
    with tempfile.TemporaryDirectory(prefix="bench-audit-") as tmp:
        log = AuditLog(f"sqlite:///{Path(tmp) / 'audit.db'}", entry_key=key)
        try:
            yield log
        finally:
            log.close()


def _append_round(base: str, key: EntryAuthenticator, entries: int, tagged: bool) -> float:
    """Seconds to append ``entries`` entries to a fresh log, tagged or not."""
    with _fresh_log(base, key) as log:
        log._append("system", "bench_warmup", "bench", {}, key if tagged else None)
        started = time.perf_counter()
        for n in range(entries):
            details = {**DETAILS, "n": n}
            if tagged:
                log.append("service:bench", "access_allowed", f"job:q{n % 8}", details)
            else:
                log._append("service:bench", "access_allowed", f"job:q{n % 8}", details, None)
        return time.perf_counter() - started


def _verify_round(base: str, key: EntryAuthenticator, entries: int) -> float:
    with _fresh_log(base, key) as log:
        for n in range(entries):
            log.append("service:bench", "access_allowed", f"job:q{n % 8}", {**DETAILS, "n": n})
        started = time.perf_counter()
        report = log.verify({}, allow_unanchored_tail=True)
        elapsed = time.perf_counter() - started
        assert report.first_bad_entry is None and report.authenticated == entries
        return elapsed


def _backend(base: str, entries: int, repeat: int, key: EntryAuthenticator) -> dict[str, Any]:
    plain = authenticated = float("inf")
    for _ in range(repeat):  # alternating, so drift on a shared machine hits both sides
        plain = min(plain, _append_round(base, key, entries, tagged=False))
        authenticated = min(authenticated, _append_round(base, key, entries, tagged=True))
    verify_s = min(_verify_round(base, key, entries) for _ in range(max(1, repeat // 2)))
    return {
        "plain_appends_per_s": round(entries / plain, 1),
        "authenticated_appends_per_s": round(entries / authenticated, 1),
        "plain_us_per_append": round(plain / entries * 1e6, 1),
        "authenticated_us_per_append": round(authenticated / entries * 1e6, 1),
        "ratio": round(plain / authenticated, 3),
        "verify_entries_per_s": round(entries / verify_s, 1),
    }


def run(entries: int = 2000, repeat: int = 5, postgres_url: str | None = None) -> dict[str, Any]:
    """The benchmark's JSON result (see the module docstring)."""
    key = EntryAuthenticator.generate()
    calls = 100_000
    started = time.perf_counter()
    for n in range(calls):
        key.tag(f"{n:064x}")
    tag_us = (time.perf_counter() - started) / calls * 1e6
    result: dict[str, Any] = {
        "benchmark": "audit",
        "entries": entries,
        "repeat": repeat,
        "tag_us": round(tag_us, 2),
        "sqlite": _backend("sqlite", entries, repeat, key),
    }
    if postgres_url:
        url = postgres_url
        if url.startswith("postgresql://"):
            url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
        result["postgresql"] = _backend(url, entries, repeat, key)
    return result
