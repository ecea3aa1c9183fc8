"""NATS JetStream over TLS, against a throwaway nats-server started here with JetStream
and a tls block that verifies client certificates (``tls_servers``; one per module): a
round trip and the source contract over mutual TLS; an unknown CA, a wrong server name
under verify-full, a missing or foreign client certificate, and a plain-text server
behind a ``tls://`` url refused with a one-line error that shows no secret."""

from __future__ import annotations

from collections.abc import Iterator

import pyarrow as pa
import pytest

from dataflare_platform.connectors import nats as nats_connector
from dataflare_platform.connectors.broker import BrokerUnavailableError
from dataflare_platform.connectors.nats import (
    NatsConsumer,
    NatsProducer,
    NatsSettings,
    NatsSource,
    delete_stream,
)
from dataflare_platform_tests.connectors.broker_helpers import (
    NATS_URL_VARIABLE,
    broker_source_case,
    read_all,
    service_url,
    unique,
)
from dataflare_platform_tests.connectors.contract import DeadLetterContract, SourceCase
from dataflare_platform_tests.tls_ca import TestCA
from dataflare_platform_tests.tls_servers import TlsNats, running_tls_nats

pytestmark = pytest.mark.e2e
SECRET = "nats-secret-91ab"  # a recognisable password
SECRET_VAR = (
    "DATAFLARE_SECRET_TEST_NATS_TLS"  # the password comes from a reference, as settings require
)


@pytest.fixture(autouse=True)
def _secret_in_env(monkeypatch) -> None:
    monkeypatch.setenv(SECRET_VAR, SECRET)


@pytest.fixture(scope="module")
def tls_nats(test_ca: TestCA, tmp_path_factory) -> Iterator[TlsNats]:
    with running_tls_nats(test_ca, tmp_path_factory.mktemp("nats-tls")) as server:
        yield server


def mtls(ca: TestCA, **values) -> dict:
    return ca.client_tls(**values)


@pytest.fixture
def make_settings(tls_nats, test_ca):
    made: list[NatsSettings] = []

    def make(**values) -> NatsSettings:
        values.setdefault("tls", mtls(test_ca))
        s = NatsSettings.load(url=tls_nats.url(), stream=unique("dftls-"), **values)
        made.append(s)
        return s

    yield make
    for s in made:
        delete_stream(s)


def refused(url: str, tls: dict | None) -> str:
    settings = NatsSettings.load(
        url=url,
        stream="s",
        tls=tls,
        connect_timeout_s=10,
        reconnect_attempts=0,
        user="user",
        password={"env": SECRET_VAR},
    )
    with pytest.raises(BrokerUnavailableError) as caught:
        NatsProducer(settings)
    message = str(caught.value)
    assert SECRET not in message and "\n" not in message
    return message


def with_password(server: TlsNats) -> str:
    # The password itself is a reference (``refused`` passes it): a url carrying it
    # is refused at load.
    return f"tls://127.0.0.1:{server.port}"


def test_round_trip_over_mutual_tls(make_settings, small_nexmark):
    bids: pa.Table = small_nexmark["bids"]
    s = make_settings(format="arrow", batch_rows=500)
    producer = NatsProducer(s)
    try:
        producer.send(bids)
        # The connection really is TLS (the socket under nats-py's transport).
        writer = producer._session.nc._transport._io_writer
        assert writer.get_extra_info("ssl_object").version() in ("TLSv1.2", "TLSv1.3")
    finally:
        producer.close()
    source = NatsSource(s, bids.schema, name="bids", bounded=True)
    try:
        assert read_all(source).equals(bids)
    finally:
        source.close()
    consumer = NatsConsumer(s, bids.schema)
    try:
        result = consumer.fetch(bids.num_rows, timeout_s=2)
        assert result.table.num_rows > 0
        result.ack()
    finally:
        consumer.close()


def test_an_unknown_ca_is_refused(tls_nats, test_ca):
    message = refused(with_password(tls_nats), mtls(test_ca, ca_file=str(test_ca.rogue_ca)))
    assert "server certificate was refused (unable to get local issuer certificate)" in message
    assert f"127.0.0.1:{tls_nats.port}" in message


def test_a_wrong_server_name_is_refused_under_verify_full(tls_nats, test_ca):
    message = refused(with_password(tls_nats), mtls(test_ca, server_name="bus.elsewhere.example"))
    assert "server certificate was refused" in message and "mismatch" in message
    # verify-ca checks the chain only: the same name then passes.
    s = NatsSettings.load(
        url=tls_nats.url(),
        stream=unique("dftls-"),
        tls=mtls(test_ca, server_name="bus.elsewhere.example", mode="verify-ca"),
    )
    NatsProducer(s).close()
    delete_stream(s)


def test_mutual_tls_needs_the_client_certificate(tls_nats, test_ca):
    message = refused(with_password(tls_nats), {"ca_file": str(test_ca.ca)})
    assert "refused this client certificate, or the lack of one" in message
    foreign = mtls(
        test_ca,
        cert_file=str(test_ca.rogue_client_cert),
        key_file=str(test_ca.rogue_client_key),
    )
    assert "TLS handshake failed" in refused(with_password(tls_nats), foreign)


def test_a_tls_url_refuses_a_server_that_offers_no_tls():
    # The machine's plain NATS: nats-py would carry on in plain text if let.
    plain = service_url(
        NATS_URL_VARIABLE, "nats://127.0.0.1:4222", "NATS JetStream", "nats-server -js"
    )
    message = refused(plain.replace("nats://", "tls://", 1), None)
    assert "did not offer TLS" in message


class TestNatsTlsSourceContract(DeadLetterContract):
    """The source contract over mutual TLS, opened through the registry from ``kind:``
    settings carrying the tls block."""

    KIND = "nats"

    @pytest.fixture
    def source_case(self, make_settings) -> SourceCase:
        return broker_source_case(
            make_settings,
            NatsProducer,
            nats_connector.NatsSourceSettings,
            nats_connector.open_source,
        )
