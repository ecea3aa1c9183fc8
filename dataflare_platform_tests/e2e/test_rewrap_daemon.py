"""Key rotation through the real deployment: the front with its daemon and code server
(``dagster_dev``), the demo's ``sealed_persons`` pipeline launched through the front and
run by the daemon stores ciphertext under key version 1; ``dataflare keys rotate
persons``; the rewrap asset, launched the same way, re-encrypts it to version 2, and its
``no_ciphertext_below_min_version`` check passes in that run; then the old version is
retired and the check still passes."""

import dagster as dg
import pytest
from typer.testing import CliRunner

from dataflare_platform.cli import app
from dataflare_platform.compliance.audit_keys import provision
from dataflare_platform.compliance.datasets import read_dataset
from dataflare_platform.compliance.spec import DatasetRef
from dataflare_platform.crypto.columns import key_versions
from dataflare_platform.events.log import EventLog

pytestmark = pytest.mark.e2e

SEALED = DatasetRef.model_validate(
    {"duckdb": {"path": "streams/sealed_persons.duckdb", "table": "sealed_persons"}}
)
TIMEOUT_S = 600


def _check_results(instance: dg.DagsterInstance, run_id: str) -> dict[str, bool]:
    out = {}
    for record in instance.all_logs(run_id):
        event = record.dagster_event
        if event is not None and event.event_type_value == "ASSET_CHECK_EVALUATION":
            data = event.event_specific_data
            out[data.check_name] = data.passed
    return out


def _keys(*args: str) -> None:
    result = CliRunner().invoke(app, ["keys", *args])
    assert result.exit_code == 0, result.output


def test_rotate_then_rewrap_through_the_daemon(dagster_dev, home, small_nexmark):
    client = dagster_dev
    provision(home.root)  # `dataflare audit init`
    persons = small_nexmark["persons"]
    log = EventLog(home.event_log_dir)
    log.create_topic("nexmark.persons", persons.schema, partitions=2, key="id").append(persons)

    sealed = client.launch_job("sealed_persons_job")
    assert client.wait(sealed, timeout_s=TIMEOUT_S) == "SUCCESS"
    stored = read_dataset(SEALED, home.root)
    assert stored.height == persons.num_rows
    assert set(key_versions(stored["email_address"]).tolist()) == {1}

    _keys("rotate", "persons")
    rewrap = client.materialize(["governance/encryption_rewrap"])
    assert client.wait(rewrap, timeout_s=TIMEOUT_S) == "SUCCESS"
    with dg.DagsterInstance.get() as instance:
        assert _check_results(instance, rewrap) == {"no_ciphertext_below_min_version": True}
        mat = instance.get_latest_materialization_event(
            dg.AssetKey(["governance", "encryption_rewrap"])
        )
        assert mat.run_id == rewrap
        detail = mat.asset_materialization.metadata["detail"].value["streams/sealed_persons"]
        assert detail["versions_after"] == {"email_address": [2], "credit_card": [2]}
    stored = read_dataset(SEALED, home.root)
    assert set(key_versions(stored["credit_card"]).tolist()) == {2}

    _keys("retire", "persons", "--below", "2")
    again = client.materialize(["governance/encryption_rewrap"])
    assert client.wait(again, timeout_s=TIMEOUT_S) == "SUCCESS"
    with dg.DagsterInstance.get() as instance:
        assert _check_results(instance, again) == {"no_ciphertext_below_min_version": True}
