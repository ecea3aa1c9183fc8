"""Redis Streams over TLS, against a throwaway redis-server started here with
``--port 0 --tls-port`` and ``--tls-auth-clients yes`` (``tls_servers``; one per module):
a round trip and the source contract over mutual TLS; an unknown CA, a wrong server name
under verify-full and a missing or foreign client certificate refused with a one-line
error that shows no secret."""

from __future__ import annotations

from collections.abc import Iterator

import pyarrow as pa
import pytest

from dataflare_platform.connectors import redis as redis_connector
from dataflare_platform.connectors.broker import BrokerUnavailableError
from dataflare_platform.connectors.redis.streams import (
    RedisConsumer,
    RedisProducer,
    RedisSettings,
    RedisSource,
    delete_stream,
)
from dataflare_platform.tls import TlsSettings
from dataflare_platform_tests.connectors.broker_helpers import (
    broker_source_case,
    read_all,
    unique,
)
from dataflare_platform_tests.connectors.contract import DeadLetterContract, SourceCase
from dataflare_platform_tests.tls_ca import TestCA
from dataflare_platform_tests.tls_servers import TlsRedis, running_tls_redis

pytestmark = pytest.mark.e2e
SECRET = "redis-secret-7c2e"  # a recognisable password
SECRET_VAR = (
    "DATAFLARE_SECRET_TEST_REDIS_TLS"  # the password comes from a reference, as settings require
)


@pytest.fixture(autouse=True)
def _secret_in_env(monkeypatch) -> None:
    monkeypatch.setenv(SECRET_VAR, SECRET)


@pytest.fixture(scope="module")
def tls_redis(test_ca: TestCA, tmp_path_factory) -> Iterator[TlsRedis]:
    with running_tls_redis(test_ca, tmp_path_factory.mktemp("redis-tls")) as server:
        yield server


def mtls(ca: TestCA, **values) -> dict:
    return ca.client_tls(**values)


@pytest.fixture
def make_settings(tls_redis, test_ca):
    made: list[RedisSettings] = []

    def make(**values) -> RedisSettings:
        values.setdefault("tls", mtls(test_ca))
        s = RedisSettings.load(url=tls_redis.url(), stream=unique("dftls:"), **values)
        made.append(s)
        return s

    yield make
    for s in made:
        delete_stream(s)


def refused(tls_redis: TlsRedis, tls: dict) -> str:
    # A password in the url is refused at load (docs/security.md, "Secrets"): a reference.
    url = f"rediss://127.0.0.1:{tls_redis.port}/0"
    settings = RedisSettings.load(
        url=url, stream="s", tls=tls, connect_timeout_s=10, password={"env": SECRET_VAR}
    )
    with pytest.raises(BrokerUnavailableError) as caught:
        RedisProducer(settings)
    message = str(caught.value)
    assert SECRET not in message and "\n" not in message
    assert f"127.0.0.1:{tls_redis.port}" in message
    return message


def test_round_trip_over_mutual_tls(make_settings, small_nexmark):
    bids: pa.Table = small_nexmark["bids"]
    s = make_settings(format="arrow", batch_rows=500)
    producer = RedisProducer(s)
    try:
        producer.send(bids)
        # The connection really is TLS.
        connection = producer._client.connection_pool.get_connection()
        try:
            assert connection._sock.version() in ("TLSv1.2", "TLSv1.3")
        finally:
            producer._client.connection_pool.release(connection)
    finally:
        producer.close()
    source = RedisSource(s, bids.schema, name="bids", bounded=True)
    try:
        assert read_all(source).equals(bids)
    finally:
        source.close()
    consumer = RedisConsumer(s, bids.schema)
    try:
        result = consumer.fetch(bids.num_rows, timeout_s=1)
        assert result.table.num_rows > 0
        result.ack()
    finally:
        consumer.close()


def test_an_unknown_ca_is_refused(tls_redis, test_ca):
    message = refused(tls_redis, mtls(test_ca, ca_file=str(test_ca.rogue_ca)))
    assert "server certificate was refused" in message
    # Redis sends its CA along (from --tls-ca-cert-file): OpenSSL's words say so.
    assert "self-signed certificate in certificate chain" in message


def test_a_wrong_server_name_is_refused_under_verify_full(tls_redis, test_ca):
    message = refused(tls_redis, mtls(test_ca, server_name="cache.elsewhere.example"))
    assert "server certificate was refused" in message and "mismatch" in message
    # verify-ca checks the chain only: the same name then passes.
    s = RedisSettings.load(
        url=tls_redis.url(),
        stream=unique("dftls:"),
        tls=mtls(test_ca, server_name="cache.elsewhere.example", mode="verify-ca"),
    )
    RedisProducer(s).close()


def test_mutual_tls_needs_the_client_certificate(tls_redis, test_ca):
    message = refused(tls_redis, {"ca_file": str(test_ca.ca)})
    assert "TLS handshake failed" in message and "client certificate" in message
    foreign = mtls(
        test_ca,
        cert_file=str(test_ca.rogue_client_cert),
        key_file=str(test_ca.rogue_client_key),
    )
    assert "TLS handshake failed" in refused(tls_redis, foreign)


def test_rediss_without_a_tls_block_still_verifies(tls_redis):
    # The test CA is not in the system's trust store: refused, not silently accepted.
    settings = RedisSettings.load(url=tls_redis.url(), stream="s", connect_timeout_s=10)
    with pytest.raises(BrokerUnavailableError, match="server certificate was refused"):
        RedisProducer(settings)


class TestRedisTlsSourceContract(DeadLetterContract):
    """The source contract over mutual TLS, opened through the registry from ``kind:``
    settings carrying the tls block."""

    KIND = "redis"

    @pytest.fixture
    def source_case(self, make_settings) -> SourceCase:
        return broker_source_case(
            make_settings,
            RedisProducer,
            redis_connector.RedisSourceSettings,
            redis_connector.open_source,
        )


def test_tls_settings_type_round_trips_through_model_dump(test_ca):
    # The contract rebuilds source settings from ``model_dump()``: the block survives.
    s = RedisSettings.load(url="rediss://h:1/0", stream="s", tls=mtls(test_ca))
    again = RedisSettings.load(**s.model_dump())
    assert isinstance(again.tls, TlsSettings) and again.tls == s.tls
