"""The shipped ``sealed_persons`` pipeline (the demo's ``pii_encrypted`` dataset): a real
run of its job over Nexmark persons stores real ciphertext, the governed dataset's
``pii_compliance`` check passes on it, and after ``dataflare keys rotate persons`` the
rewrap asset brings it to the new version (``no_ciphertext_below_min_version`` passes)."""

from __future__ import annotations

import dagster as dg
from typer.testing import CliRunner

from dataflare_platform.cli import app
from dataflare_platform.compliance.audit_keys import provision
from dataflare_platform.compliance.datasets import read_dataset
from dataflare_platform.compliance.spec import DatasetRef
from dataflare_platform.crypto.columns import Binding, key_versions
from dataflare_platform.crypto.settings import CryptoSettings
from dataflare_platform.definitions import defs
from dataflare_platform.events.log import EventLog

SEALED = DatasetRef.model_validate(
    {"duckdb": {"path": "streams/sealed_persons.duckdb", "table": "sealed_persons"}}
)


def test_the_demo_pipeline_encrypts_and_the_checks_pass_before_and_after_a_rotation(
    home, small_nexmark
):
    provision(home.root)  # `dataflare audit init`, as `make demo` does first
    persons = small_nexmark["persons"]
    log = EventLog(home.event_log_dir)
    log.create_topic("nexmark.persons", persons.schema, partitions=2, key="id").append(persons)
    with dg.DagsterInstance.get() as instance:
        run = defs.resolve_job_def("sealed_persons_job").execute_in_process(instance=instance)
        assert run.success
        checks = {e.check_name: e for e in run.get_asset_check_evaluations()}
        assert checks["pii_compliance"].passed, checks["pii_compliance"].description

        stored = read_dataset(SEALED, home.root)
        assert stored.height == persons.num_rows
        for column in ("email_address", "credit_card"):
            assert set(key_versions(stored[column]).tolist()) == {1}
        raw = b"".join(stored["email_address"].to_list())
        assert not any(e.encode() in raw for e in persons["email_address"].to_pylist()[:20])
        cipher = CryptoSettings.resolve().cipher()
        back = cipher.decrypt(stored["email_address"], Binding("persons", "email_address"))
        expected = dict(
            zip(persons["id"].to_pylist(), persons["email_address"].to_pylist(), strict=True)
        )
        assert dict(zip(stored["id"].to_list(), back.to_pylist(), strict=True)) == expected

        rotated = CliRunner().invoke(app, ["keys", "rotate", "persons"])
        assert rotated.exit_code == 0, rotated.output
        rewrap = defs.resolve_implicit_global_asset_job_def()
        result = rewrap.execute_in_process(
            instance=instance,
            asset_selection=[dg.AssetKey(["governance", "encryption_rewrap"])],
        )
        assert result.success
        (after,) = result.get_asset_check_evaluations()
        assert after.check_name == "no_ciphertext_below_min_version" and after.passed
        stored = read_dataset(SEALED, home.root)
        assert set(key_versions(stored["credit_card"]).tolist()) == {2}
        assert after.metadata["below_latest_version"].value == {
            "streams/sealed_persons": {"email_address": 0, "credit_card": 0}
        }
