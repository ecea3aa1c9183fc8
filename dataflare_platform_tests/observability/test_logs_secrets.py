"""No secret in the logs: random secrets (new every run) go through failing connections and
bad configs of the ``dataflare`` command, run as a process of its own with JSON logs at
DEBUG (the client libraries' loggers at DEBUG too); no secret appears on its stdout or
stderr in plain, URL-encoded or base64 form, and the log lines still parse one by one.

The servers are the private Redis and NATS of ``test_secret_leaks`` (they require the
right credential, so a wrong one fails for real)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from urllib.parse import quote

import pytest
import yaml

from dataflare_platform.gateway.process import free_port
from dataflare_platform_tests.test_secret_leaks import (
    _forms,
    nats_port,
    redis_port,
    values,
)

__all__ = ["nats_port", "redis_port", "values"]  # fixtures

pytestmark = pytest.mark.e2e

SCHEMA = {"id": "int64", "date_time": "timestamp[ms]"}


def _pipeline(tmp_path: Path, name: str, source: dict) -> Path:
    spec = {
        "name": name,
        "sources": {"events": {**source, "schema": SCHEMA}},
        "streams": {"all": {"from": "events"}},
        "output": "all",
        "sink": {"kind": "discard"},
    }
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def _dataflare(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "DATAFLARE_LOG_FORMAT": "json",
        "DATAFLARE_LOG_LEVEL": "DEBUG",
        # The client libraries' own loggers too: what they echo must be redacted as well.
        "DATAFLARE_LOG_LEVELS": "root=DEBUG,redis=DEBUG,nats=DEBUG,asyncio=DEBUG",
        "DATAFLARE_HOME": str(tmp_path / "home"),
    }
    return subprocess.run(
        [sys.executable, "-m", "dataflare_platform.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_failing_connections_and_bad_configs_log_no_secret(tmp_path, values, redis_port, nats_port):
    dead_port = free_port()

    def secret(name: str) -> dict:
        return {"env": f"DATAFLARE_SECRET_LEAK_{name}"}

    cases = {
        "redis wrong password": (
            "pipeline",
            "run",
            str(
                _pipeline(
                    tmp_path,
                    "redis_wrong",
                    {
                        "kind": "redis",
                        "url": f"redis://127.0.0.1:{redis_port}/0",
                        "stream": "leak",
                        "password": secret("REDIS_WRONG"),
                    },
                )
            ),
        ),
        "redis unreachable": (
            "pipeline",
            "run",
            str(
                _pipeline(
                    tmp_path,
                    "redis_gone",
                    {
                        "kind": "redis",
                        "url": f"redis://127.0.0.1:{dead_port}/0",
                        "stream": "leak",
                        "password": secret("REDIS"),
                    },
                )
            ),
        ),
        "nats wrong password": (
            "pipeline",
            "run",
            str(
                _pipeline(
                    tmp_path,
                    "nats_wrong",
                    {
                        "kind": "nats",
                        "url": f"nats://127.0.0.1:{nats_port}",
                        "stream": "leak",
                        "user": "dataflare",
                        "password": secret("NATS_WRONG"),
                    },
                )
            ),
        ),
        # A literal credential in a settings file: refused at load, never repeated.
        "literal password in a URL": (
            "pipeline",
            "validate",
            str(
                _pipeline(
                    tmp_path,
                    "literal",
                    {
                        "kind": "redis",
                        # URL-encoded, as a user writes a password with '/' in a URL.
                        "url": f"redis://:{quote(values['REDIS'], safe='')}@127.0.0.1:"
                        f"{redis_port}/0",
                        "stream": "leak",
                    },
                )
            ),
        ),
    }
    leaks, parsed = [], 0
    for case, args in cases.items():
        proc = _dataflare(tmp_path, *args)
        assert proc.returncode != 0, f"{case}: should fail\n{proc.stderr}"
        for where, text in (("stdout", proc.stdout), ("stderr", proc.stderr)):
            for name, value in values.items():
                for form in _forms(value):
                    if form in text:
                        leaks.append(f"{name} ({form!r}) in {case} {where}")
        for line in proc.stderr.splitlines():
            if line.startswith("{"):
                json.loads(line)  # a log line is one JSON object
                parsed += 1
    print({c: _dataflare(tmp_path, *a).stderr[-800:] for c, a in cases.items()})
    assert not leaks, leaks
    assert parsed > 0  # DEBUG logs were written (asyncio, connectors), and parsed
