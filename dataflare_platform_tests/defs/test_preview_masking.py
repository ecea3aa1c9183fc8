"""Metadata previews never carry raw PII: the persons table (classified pii_allowed in the
raw zone) is materialized on a real instance and its stored metadata read back."""

from __future__ import annotations

import re

import dagster as dg
import polars as pl
import pyarrow as pa

from dataflare_platform.compliance.pii import Classification, PiiPolicy, mask_sample
from dataflare_platform.defs.metadata import markdown_preview
from dataflare_platform.defs.nexmark import assets
from dataflare_platform.defs.resources import ProjectHomeResource

EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+\.[A-Za-z]{2,}")
CARD = re.compile(r"\b(?:[0-9][ -]?){12,18}[0-9]\b")


def test_persons_materialization_metadata_has_no_raw_email_or_card(landed_home):
    with dg.instance_for_test() as instance:
        result = dg.materialize(
            [assets.persons],
            resources={"dataflare": ProjectHomeResource(path=str(landed_home.root))},
            instance=instance,
        )
        assert result.success
        event = instance.get_latest_materialization_event(dg.AssetKey(["nexmark", "persons"]))
        metadata = event.asset_materialization.metadata
    preview = metadata["preview"].value
    assert "email_address" in preview and "credit_card" in preview
    assert preview.count("\n") >= 3  # rows were previewed
    stored = " ".join(str(v.value) for v in metadata.values())
    assert not EMAIL.search(stored), stored
    assert not CARD.search(stored), stored


def test_unknown_classification_masks_every_string_column():
    table = pa.table({"id": [1], "note": ["call bob"], "city": ["Paris"]})
    text = markdown_preview(table, asset=None).value
    assert "Paris" not in text and "call bob" not in text
    assert "| 1 |" in text


def test_unclassified_columns_of_a_governed_dataset_are_scanned():
    policy = PiiPolicy(columns={"credit_card": Classification.ALLOWED})
    frame = pl.DataFrame(
        {
            "credit_card": ["4111 1111 1111 1111"],
            "note": ["mail alice@example.com"],
            "city": ["Paris"],
        }
    )
    masked = mask_sample(frame, policy).to_dicts()[0]
    assert masked["city"] == "Paris"
    assert "alice@example.com" not in masked["note"]
    assert masked["credit_card"].endswith("1111") and "4111" not in masked["credit_card"]


def test_failing_values_of_an_expectation_are_masked_by_the_column_classification():
    from dataflare_platform.defs.metadata import safe_values

    persons = "nexmark/persons"  # email_address and credit_card classified pii_allowed
    assert safe_values(["alice@example.com"], persons, "email_address") == ["*****@*******.com"]
    assert safe_values(["Paris", "bob@example.org"], persons, "city") == [
        "Paris",
        "***@*******.org",
    ]
    assert safe_values([-2.0, "x"], None, "amount") == [-2.0, "*"]
