"""The connectors' TLS settings on their own (no server): verification is on by default,
turning it off is explicit and logged, files are checked at load naming the field, and
each connector refuses a tls block its url or dsn would ignore or contradict.

The round trips against real TLS servers are in ``test_*_tls.py``."""

from __future__ import annotations

import logging
import shutil
import ssl

import pytest
from psycopg.conninfo import conninfo_to_dict

from dataflare_platform.connectors.nats import NatsSettings
from dataflare_platform.connectors.postgres import PostgresSinkSettings
from dataflare_platform.connectors.postgres.sink import tls_conninfo
from dataflare_platform.connectors.redis import RedisSettings
from dataflare_platform.errors import ConfigError
from dataflare_platform.models import validated
from dataflare_platform.streams.spec import PipelineSpec
from dataflare_platform.tls import TlsSettings


def load(data: dict) -> TlsSettings:
    return validated(TlsSettings, "TLS settings", data)


def test_defaults_verify_chain_and_name():
    tls = load({})
    assert tls.mode == "verify-full" and tls.verifies and tls.checks_name
    context = tls.ssl_context()
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    assert context.minimum_version >= ssl.TLSVersion.TLSv1_2
    assert tls.libpq_params() == {"sslmode": "verify-full", "sslrootcert": "system"}


def test_mutual_tls_settings_reach_every_library(test_ca):
    tls = load(
        {
            "ca_file": str(test_ca.ca),
            "cert_file": str(test_ca.client_cert),
            "key_file": str(test_ca.client_key),
        }
    )
    assert tls.libpq_params() == {
        "sslmode": "verify-full",
        "sslrootcert": str(test_ca.ca),
        "sslcert": str(test_ca.client_cert),
        "sslkey": str(test_ca.client_key),
    }
    context = tls.ssl_context()  # loads the CA and the key pair
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname


def test_turning_verification_off_is_explicit_and_logged(caplog, test_ca):
    with caplog.at_level(logging.WARNING, logger="dataflare_platform.tls"):
        tls = load({"ca_file": str(test_ca.ca), "insecure_skip_verify": True})
    assert "verification is OFF" in caplog.text
    assert tls.libpq_params()["sslmode"] == "require"
    context = tls.ssl_context()
    assert context.verify_mode == ssl.CERT_NONE and not context.check_hostname
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="dataflare_platform.tls"):
        chain_only = load({"mode": "verify-ca"})
    assert "its name is not" in caplog.text
    assert chain_only.libpq_params()["sslmode"] == "verify-ca"
    assert not chain_only.ssl_context().check_hostname
    assert chain_only.ssl_context().verify_mode == ssl.CERT_REQUIRED
    with pytest.raises(ConfigError) as caught:
        load({"mode": "none"})  # no quiet spelling of "off"
    assert caught.value.fields == ["mode"]


def test_files_are_checked_at_load_naming_the_field(tmp_path, test_ca):
    loose = tmp_path / "loose.key"
    shutil.copyfile(test_ca.client_key, loose)
    loose.chmod(0o644)
    with pytest.raises(ConfigError) as caught:
        load(
            {
                "ca_file": str(tmp_path / "missing.pem"),
                "cert_file": str(tmp_path),  # a directory
                "key_file": str(loose),
            }
        )
    problems = dict(caught.value.problems)
    assert set(problems) == {"ca_file", "cert_file", "key_file"}
    assert "does not exist" in problems["ca_file"]
    assert "not a regular file" in problems["cert_file"]
    assert "0644" in problems["key_file"] and "chmod 600" in problems["key_file"]


def test_client_certificate_and_key_come_together(test_ca):
    with pytest.raises(ConfigError, match="key_file is missing"):
        load({"cert_file": str(test_ca.client_cert)})
    with pytest.raises(ConfigError, match="cert_file is missing"):
        load({"key_file": str(test_ca.client_key)})


def test_a_tls_block_needs_a_tls_url(test_ca):
    tls = {"ca_file": str(test_ca.ca)}
    with pytest.raises(ConfigError, match="rediss://"):
        RedisSettings.load(url="redis://127.0.0.1:6379/0", stream="s", tls=tls)
    assert RedisSettings.load(url="rediss://127.0.0.1:6379/0", stream="s", tls=tls).uses_tls
    with pytest.raises(ConfigError, match="tls://"):
        NatsSettings.load(url="nats://127.0.0.1:4222", stream="s", tls=tls)
    assert NatsSettings.load(url="tls://127.0.0.1:4222", stream="s", tls=tls).uses_tls
    # A bad field inside the block is named with its path.
    with pytest.raises(ConfigError) as caught:
        RedisSettings.load(url="rediss://h:1/0", stream="s", tls={"ca_file": "/nonexistent"})
    assert caught.value.fields == ["tls.ca_file"]


def test_postgres_tls_lives_in_one_place(test_ca):
    tls = {"ca_file": str(test_ca.ca)}
    with pytest.raises(ConfigError, match="sslmode") as caught:
        validated(
            PostgresSinkSettings,
            "sink",
            {"dsn": "postgresql://u@h/db?sslmode=disable", "table": "t", "tls": tls},
        )
    assert "disable" not in str(caught.value)  # the parameter's name, not the dsn
    ok = validated(
        PostgresSinkSettings, "sink", {"dsn": "postgresql://u@h/db", "table": "t", "tls": tls}
    )
    assert ok.tls is not None and ok.tls.ca_file == test_ca.ca


def test_postgres_server_name_keeps_dialling_the_dsn_host(test_ca):
    tls = load({"ca_file": str(test_ca.ca), "server_name": "db.internal"})
    params = conninfo_to_dict(tls_conninfo("postgresql://u@127.0.0.1:5433/db", tls))
    assert params["host"] == "db.internal" and params["hostaddr"] == "127.0.0.1"
    assert params["sslmode"] == "verify-full" and params["port"] == "5433"


def test_a_pipeline_file_carries_the_tls_block_and_names_a_bad_field(tmp_path, test_ca):
    loose = tmp_path / "loose.key"
    shutil.copyfile(test_ca.client_key, loose)
    loose.chmod(0o644)
    spec = {
        "name": "tls-pipeline",
        "sources": {
            "bids": {
                "kind": "redis",
                "url": "rediss://cache.internal:6380/0",
                "stream": "bids",
                "schema": {"auction": "int64", "date_time": "timestamp[ms]"},
                "tls": {
                    "ca_file": str(test_ca.ca),
                    "cert_file": str(test_ca.client_cert),
                    "key_file": str(test_ca.client_key),
                },
            }
        },
        "streams": {"out": {"from": "bids", "steps": [{"select": ["auction", "date_time"]}]}},
        "output": "out",
        "sink": {
            "kind": "postgres",
            "dsn": "postgresql://dataflare@db.internal/dataflare",
            "table": "out",
            "tls": {"ca_file": str(test_ca.ca), "server_name": "db.internal"},
        },
    }
    loaded = PipelineSpec.load(spec)
    assert loaded.sink.tls is not None and loaded.sink.tls.mode == "verify-full"
    spec["sources"]["bids"]["tls"]["key_file"] = str(loose)
    with pytest.raises(ConfigError) as caught:
        PipelineSpec.load(spec)
    (field,) = caught.value.fields
    assert field.startswith("sources.bids") and field.endswith("tls.key_file")
