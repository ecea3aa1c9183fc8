"""Secrets never leak: recognisable random secrets (new every run) go through the
succeeding and failing paths of every connector that takes a credential (Redis and NATS
against private servers that require them, PostgreSQL) and every alert channel (SMTP over
STARTTLS, HTTPS webhook with a credential header, Slack with a secret URL), a pipeline
using them runs through a real Dagster instance (a good run and a failing one), and a run
config that tries to pass a password is refused and audited. Then every output is searched
for each secret in its plain, URL-encoded and base64 forms: exception messages and
tracebacks, captured logs and stderr, Dagster's event log and run storage, alert payloads
and mails, the alert store, the audit log and every file under the home.

There is no RabbitMQ connector and the embedded event log takes no credential; both have
nothing to search here (docs/security.md says so)."""

from __future__ import annotations

import base64
import logging
import secrets
import socket
import subprocess
import time
import traceback
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote, quote_plus

import dagster as dg
import pyarrow as pa
import pytest

from dataflare_platform.alerting import AlertManager, RuleSet
from dataflare_platform.alerting.engine import AlertEvent
from dataflare_platform.connectors.nats import NatsProducer, NatsSettings, ensure_stream
from dataflare_platform.connectors.postgres import connect as pg_connect
from dataflare_platform.connectors.redis import RedisProducer, RedisSettings
from dataflare_platform.connectors.redis import delete_stream as delete_redis_stream
from dataflare_platform.defs.plugins.resources import PluginRuntimeResource
from dataflare_platform.defs.resources import ProjectHomeResource
from dataflare_platform.defs.streams.factory import stream_definitions
from dataflare_platform.errors import DataflareError
from dataflare_platform.gateway.process import free_port
from dataflare_platform.instance.run_config_guard import refuse_overrides
from dataflare_platform.streams.spec import PipelineSpec
from dataflare_platform.tls import TlsSettings
from dataflare_platform_tests.conftest import DEFAULT_POSTGRES_DSN
from dataflare_platform_tests.connectors.broker_helpers import unique
from dataflare_platform_tests.receivers import (  # noqa: F401
    http_receiver,
    https_receiver,
    start_smtp,
)
from dataflare_platform_tests.tls_servers import TlsPostgres, running_tls_postgres

pytestmark = pytest.mark.e2e

NAMES = ["REDIS", "REDIS_WRONG", "NATS", "NATS_WRONG", "PG", "PG_WRONG", "SMTP", "SMTP_WRONG"]
NAMES += ["HOOK", "SLACK", "RUN_CONFIG"]


def _wait_port(port: int, proc: subprocess.Popen, what: str) -> None:
    """Until the server accepts connections (generous ceiling; fails if it exited)."""
    for _ in range(600):
        if proc.poll() is not None:
            pytest.fail(f"{what} exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.05)
    pytest.fail(f"{what} did not listen on {port}")


@pytest.fixture
def values(monkeypatch) -> dict[str, str]:
    """Fresh secrets with characters that URL-encoding changes."""
    made = {name: f"leak{name.lower()}-{secrets.token_urlsafe(12)}/+=" for name in NAMES}
    for name, value in made.items():
        monkeypatch.setenv(f"DATAFLARE_SECRET_LEAK_{name}", value)
    return made


def _ref(name: str) -> dict[str, str]:
    return {"env": f"DATAFLARE_SECRET_LEAK_{name}"}


@pytest.fixture
def redis_port(values, tmp_path) -> Iterator[int]:
    """A private redis-server that requires the password (config on stdin: not in argv)."""
    port = free_port()
    config = (
        f'port {port}\nbind 127.0.0.1\nsave ""\nappendonly no\ndir {tmp_path}\n'
        f'requirepass "{values["REDIS"]}"\n'
    )
    proc = subprocess.Popen(
        ["redis-server", "-"], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True
    )
    assert proc.stdin is not None
    proc.stdin.write(config)
    proc.stdin.close()
    try:
        _wait_port(port, proc, "redis-server")
        yield port
    finally:
        proc.terminate()
        proc.wait()


@pytest.fixture
def nats_port(values, tmp_path) -> Iterator[int]:
    """A private nats-server with JetStream and a user/password (from a 0600 config)."""
    port = free_port()
    config = tmp_path / "nats.conf"
    config.write_text(
        f"listen: 127.0.0.1:{port}\njetstream {{ store_dir: {tmp_path / 'js'!s} }}\n"
        f'authorization {{ user: dataflare, password: "{values["NATS"]}" }}\n'
    )
    config.chmod(0o600)
    proc = subprocess.Popen(
        ["nats-server", "-c", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        _wait_port(port, proc, "nats-server")
        yield port
    finally:
        proc.terminate()
        proc.wait()


@pytest.fixture
def pg_password_server(values, test_ca) -> Iterator[TlsPostgres]:
    """A throwaway PostgreSQL (TLS only) where the role ``leak`` signs in with the
    ``PG`` secret (SCRAM): the machine's own server trusts every local login, so a wrong
    password is only refused here."""
    with running_tls_postgres(test_ca, password_role=("leak", values["PG"])) as server:
        yield server


class Outputs:
    """Everything the platform said: collected as text, searched at the end."""

    def __init__(self) -> None:
        self.texts: dict[str, str] = {}

    def add(self, where: str, text: Any) -> None:
        self.texts[f"{where}#{len(self.texts)}"] = text if isinstance(text, str) else repr(text)

    def error(self, where: str, call: Callable[[], Any]) -> BaseException:
        """Run ``call``, which must fail with a DataflareError; keep message and traceback."""
        try:
            call()
        except DataflareError as err:
            self.add(where, "".join(traceback.format_exception(err)))
            return err
        pytest.fail(f"{where}: expected a refusal")

    def add_files(self, root: Path) -> None:
        for path in sorted(root.rglob("*")):
            if path.is_file():
                self.add(f"file {path}", path.read_bytes().decode("latin-1"))


def _forms(value: str) -> set[str]:
    raw = value.encode()
    return {
        value,
        quote(value, safe=""),
        quote_plus(value),
        base64.b64encode(raw).decode(),
        base64.urlsafe_b64encode(raw).decode(),
        value.split("-", 1)[1][:16],  # the random core, whatever was done to the rest
    }


def _leaks(outputs: Outputs, values: dict[str, str]) -> list[str]:
    found = []
    for where, text in outputs.texts.items():
        for name, value in values.items():
            for form in _forms(value):
                if form in text:
                    found.append(f"{name} ({form!r}) in {where}")
    return found


def _table(n: int = 50) -> pa.Table:
    return pa.table(
        {
            "id": pa.array(range(n), pa.int64()),
            "date_time": pa.array([1_700_000_000_000 + i for i in range(n)], pa.timestamp("ms")),
        }
    )


def _spec(name: str, redis_url: str, stream: str, password: str, table: str) -> PipelineSpec:
    return PipelineSpec.load(
        {
            "name": name,
            "sources": {
                "events": {
                    "kind": "redis",
                    "url": redis_url,
                    "stream": stream,
                    "password": _ref(password),
                    "schema": {"id": "int64", "date_time": "timestamp[ms]"},
                }
            },
            "streams": {"all": {"from": "events"}},
            "output": "all",
            "sink": {
                "kind": "postgres",
                "dsn": DEFAULT_POSTGRES_DSN,
                "password": _ref("PG"),
                "table": table,
            },
        }
    )


def _resources(home) -> dict[str, Any]:
    return {
        "dataflare": ProjectHomeResource(path=str(home.root)),
        "plugins": PluginRuntimeResource(plugin_dir=str(home.root / "plugins")),
    }


def test_no_secret_reaches_any_output(
    home,
    values,
    redis_port,
    nats_port,
    https_receiver,  # noqa: F811 (fixtures imported from receivers)
    test_ca,
    pg_password_server,
    entry_key_file,  # the refusal below appends to an audit log: it needs the entry key
    caplog,
    capfd,
    monkeypatch,
):
    caplog.set_level(logging.DEBUG)
    out = Outputs()
    redis_url = f"redis://127.0.0.1:{redis_port}/0"
    dead_port = free_port()

    # -- Redis: good password, wrong password, unreachable server -----------------------
    good = RedisSettings(url=redis_url, stream=unique("leak:"), password=_ref("REDIS"))
    producer = RedisProducer(good)
    producer.send(_table())
    producer.close()
    wrong = RedisSettings(url=redis_url, stream=good.stream, password=_ref("REDIS_WRONG"))
    out.error("redis wrong password", lambda: RedisProducer(wrong).send(_table()))
    gone = RedisSettings(
        url=f"redis://127.0.0.1:{dead_port}/0", stream=good.stream, password=_ref("REDIS")
    )
    out.error("redis unreachable", lambda: RedisProducer(gone).send(_table()))

    # -- NATS: good password, wrong password, unreachable server -------------------------
    def nats_settings(port: int, secret: str, stream: str) -> NatsSettings:
        return NatsSettings(
            url=f"nats://127.0.0.1:{port}",
            stream=stream,
            user="dataflare",
            password=_ref(secret),
            reconnect_attempts=0,
        )

    nats = nats_settings(nats_port, "NATS", unique("leak-"))
    ensure_stream(nats)
    nats_producer = NatsProducer(nats)
    nats_producer.send(_table())
    nats_producer.close()
    bad_nats = nats_settings(nats_port, "NATS_WRONG", nats.stream)
    out.error("nats wrong password", lambda: NatsProducer(bad_nats))
    gone_nats = nats_settings(dead_port, "NATS", nats.stream)
    out.error("nats unreachable", lambda: NatsProducer(gone_nats))

    # -- PostgreSQL: good and wrong password (TLS, SCRAM), unreachable server ----------
    with pg_connect(DEFAULT_POSTGRES_DSN, password=values["PG"]) as conn:
        conn.execute("SELECT 1")
    server_tls = TlsSettings(ca_file=test_ca.ca)
    leak_dsn = pg_password_server.dsn("leak")
    with pg_connect(leak_dsn, 30, tls=server_tls, password=values["PG"]) as conn:
        assert conn.execute("SELECT current_user").fetchone() == ("leak",)
    refused = out.error(
        "postgres wrong password",
        lambda: pg_connect(leak_dsn, 30, tls=server_tls, password=values["PG_WRONG"]),
    )
    assert "password authentication failed" in str(refused)  # the failing path ran
    dead_dsn = f"postgresql://postgres@127.0.0.1:{dead_port}/test"
    out.error("postgres unreachable", lambda: pg_connect(dead_dsn, 2, password=values["PG"]))

    # -- Dagster: a pipeline with a Redis source and a PostgreSQL sink, both with refs ---
    (home.root / "dagster").mkdir(mode=0o700)
    instance = dg.DagsterInstance.local_temp(tempdir=str(home.root / "dagster"))
    table = unique("leak_")
    spec = _spec("leak_ok", redis_url, good.stream, "REDIS", table)
    defs = dg.Definitions.merge(
        stream_definitions([spec]), dg.Definitions(resources=_resources(home))
    )
    sensor = defs.resolve_sensor_def("leak_ok_sensor")
    with dg.build_sensor_context(resources=_resources(home), instance=instance) as context:
        request = sensor(context)
    assert isinstance(request, dg.RunRequest)
    asset = defs.resolve_assets_def(dg.AssetKey(["streams", "leak_ok"]))
    result = dg.materialize([asset], run_config=request.run_config, instance=instance)
    assert result.success
    (mat,) = result.asset_materializations_for_node("streams__leak_ok")
    assert mat.metadata["events_in"].value == 50
    out.add("run metadata", {k: getattr(v, "value", v) for k, v in mat.metadata.items()})

    bad_spec = _spec("leak_bad", redis_url, good.stream, "REDIS_WRONG", table)
    bad_defs = dg.Definitions.merge(
        stream_definitions([bad_spec]), dg.Definitions(resources=_resources(home))
    )
    bad_sensor = bad_defs.resolve_sensor_def("leak_bad_sensor")
    with dg.build_sensor_context(resources=_resources(home), instance=instance) as context:
        # The sensor treats a broker it cannot read as "no new events" (ranges.py).
        skipped = bad_sensor(context)
    assert isinstance(skipped, dg.SkipReason)
    out.add("sensor skip", skipped.skip_message)
    bad_asset = bad_defs.resolve_assets_def(dg.AssetKey(["streams", "leak_bad"]))
    failed = dg.materialize(
        [bad_asset],
        run_config={"ops": {"streams__leak_bad": request.run_config["ops"]["streams__leak_ok"]}},
        instance=instance,
        raise_on_error=False,
    )
    assert not failed.success
    for run_id in (result.run_id, failed.run_id):
        for record in instance.all_logs(run_id):
            out.add(f"dagster event log {run_id}", dg.serialize_value(record))
    failure = failed.get_step_failure_events()[0].event_specific_data.error
    failure_text = failure.to_string()
    assert "invalid username-password pair" in failure_text  # Redis refused the login

    # -- a run config that tries to carry a password: refused and audited by path only --
    audit_url = f"sqlite:///{home.root / 'audit-leak.db'}"
    out.error(
        "run config refusal",
        lambda: refuse_overrides(
            {"resources": {"governance": {"config": {"password": values["RUN_CONFIG"]}}}},
            run_id="r-leak",
            actor="system",
            audit_url=audit_url,
        ),
    )

    # -- alert channels: SMTP (good and wrong password), HTTPS webhook, Slack -----------
    smtp_ok, smtp_ok_rx = start_smtp("starttls", values["SMTP"], test_ca)
    smtp_bad, smtp_bad_rx = start_smtp("starttls", values["SMTP"] + "x", test_ca)
    https_receiver.failing.add("/fail")
    base = https_receiver.url("")
    try:
        rules = RuleSet.load(
            {
                "channels": {
                    "mail": _mail(smtp_ok_rx, test_ca, "SMTP"),
                    "mail_bad": _mail(smtp_bad_rx, test_ca, "SMTP_WRONG"),
                    "hook": {
                        "type": "webhook",
                        "url": f"{base}/ok",
                        "ca_file": test_ca.ca_file,
                        "headers": {"Authorization": _ref("HOOK")},
                    },
                    "hook_fail": {
                        "type": "webhook",
                        "url": f"{base}/fail",
                        "ca_file": test_ca.ca_file,
                        "headers": {"X-Api-Key": _ref("HOOK")},
                    },
                    "slack": {"type": "slack", "url": _ref("SLACK"), "ca_file": test_ca.ca_file},
                },
                "rules": [
                    {
                        "name": "run_failed",
                        "kind": "run_failed",
                        "channels": ["mail", "mail_bad", "hook", "hook_fail", "slack"],
                    }
                ],
            }
        )
        # The Slack URL is a secret too: it lives in the variable, path included.
        monkeypatch.setenv("DATAFLARE_SECRET_LEAK_SLACK", f"{base}/services/{values['SLACK']}")
        manager = AlertManager(rules, f"sqlite:///{home.root / 'alerts-leak.db'}")

        [alert] = manager.observe(
            AlertEvent(
                kind="run_failed",
                timestamp=datetime.now(UTC),
                job="leak_bad",
                run_id=failed.run_id,
                message=failure_text,
            ),
            datetime.now(UTC),
        )
        out.add("alert", alert.model_dump())
        for note in manager.store.notifications():
            out.add("notification", note.model_dump())
        manager.close()
    finally:
        smtp_ok.stop()
        smtp_bad.stop()
    assert smtp_ok_rx.logins == [("alerts", values["SMTP"])] and len(smtp_ok_rx.messages) == 1
    assert smtp_bad_rx.messages == []  # refused login: the failing path ran
    assert alert.last_error and "mail_bad" in alert.last_error and "hook_fail" in alert.last_error
    assert https_receiver.headers[0]["Authorization"] == values["HOOK"]  # delivered, not shown
    for _, body in https_receiver.requests:
        out.add("alert payload", body)
    for _, _, mail in smtp_ok_rx.messages:
        out.add("mail", mail.as_string())

    # -- search everything -------------------------------------------------------------
    for record in caplog.records:
        out.add("log", f"{record.getMessage()} {record.exc_text or ''}")
    captured = capfd.readouterr()
    out.add("stdout", captured.out)
    out.add("stderr", captured.err)
    out.add_files(home.root)
    assert (home.root / "audit-leak.db").is_file()  # the refusal was audited
    assert len(out.texts) > 20
    assert _leaks(out, values) == []
    # The search itself finds an encoded secret (it is not vacuously empty).
    planted = Outputs()
    planted.add("planted", f"x{base64.b64encode(values['SMTP'].encode()).decode()}y")
    planted.add("planted", f"x{quote(values['HOOK'], safe='')}y")
    assert {leak.split()[0] for leak in _leaks(planted, values)} == {"SMTP", "HOOK"}
    delete_redis_stream(good)


def _mail(receiver, ca, secret: str) -> dict[str, Any]:
    return {
        "type": "email",
        "host": receiver.host,
        "port": receiver.port,
        "from": "alerts@dataflare.test",
        "to": "ops@dataflare.test",
        "starttls": True,
        "ca_file": ca.ca_file,
        "username": "alerts",
        "password": _ref(secret),
        "timeout": 10,
    }
