"""The ``encrypt`` step in a StreamPipelineComponent's defs.yaml (a dg sandbox project):
it builds like any step, and a bad argument fails loading naming the file and the field."""

import yaml

from dataflare_platform.component_files import DEFS_DIR
from dataflare_platform_tests.components.sandboxes import built_pipeline, pipeline_loading_error

SHIPPED = DEFS_DIR / "streams" / "hot_items" / "defs.yaml"


def _with_encrypt(encrypt: dict) -> dict:
    data = yaml.safe_load(SHIPPED.read_text())
    data["attributes"]["streams"]["hot"]["steps"].append({"encrypt": encrypt})
    return data


def test_an_encrypt_step_builds_in_a_component(tmp_path, monkeypatch):
    monkeypatch.setenv("DATAFLARE_KEYRING_DIR", str(tmp_path / "keys"))
    contents = _with_encrypt({"dataset": "hot_items", "columns": ["auction"]})
    with built_pipeline("hot_sealed", contents) as (component, defs, _):
        (step,) = [s for s in component.spec.streams["hot"].steps if s.op == "encrypt"]
        assert step.arg.dataset == "hot_items" and step.arg.columns == ["auction"]
        assert defs.assets


def test_a_bad_encrypt_step_fails_loading_naming_the_file_and_the_field():
    bad = _with_encrypt({"dataset": "hot_items", "columns": ["auction"], "key": "../../etc"})
    text = pipeline_loading_error("broken_sealed", bad)
    assert "broken_sealed/defs.yaml" in text and "streams.hot.steps.2" in text
    assert "encrypt.key" in text
