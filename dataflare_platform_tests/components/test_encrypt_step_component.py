"""The ``encrypt`` step in a StreamPipelineComponent's defs.yaml (a dg sandbox project):
it builds like any step, and a bad argument fails loading naming the file and the field."""

import pytest
import yaml
from dagster.components.testing import create_defs_folder_sandbox

from dataflare_platform.component_files import DEFS_DIR
from dataflare_platform.components import StreamPipelineComponent

SHIPPED = DEFS_DIR / "streams" / "hot_items" / "defs.yaml"


def _with_encrypt(encrypt: dict) -> dict:
    data = yaml.safe_load(SHIPPED.read_text())
    data["attributes"]["streams"]["hot"]["steps"].append({"encrypt": encrypt})
    return data


def _chain(err: BaseException) -> str:
    text = []
    while err is not None:
        text.append(str(err))
        err = err.__cause__ or err.__context__
    return "\n".join(text)


def test_an_encrypt_step_builds_in_a_component(tmp_path, monkeypatch):
    monkeypatch.setenv("DATAFLARE_KEYRING_DIR", str(tmp_path / "keys"))
    with create_defs_folder_sandbox() as sandbox:
        path = sandbox.scaffold_component(
            StreamPipelineComponent,
            defs_path="hot_sealed",
            defs_yaml_contents=_with_encrypt({"dataset": "hot_items", "columns": ["auction"]}),
        )
        with sandbox.load_component_and_build_defs(defs_path=path) as (component, defs):
            (step,) = [s for s in component.spec.streams["hot"].steps if s.op == "encrypt"]
            assert step.arg.dataset == "hot_items" and step.arg.columns == ["auction"]
            assert defs.assets


def test_a_bad_encrypt_step_fails_loading_naming_the_file_and_the_field():
    bad = _with_encrypt({"dataset": "hot_items", "columns": ["auction"], "key": "../../etc"})
    with create_defs_folder_sandbox() as sandbox:
        path = sandbox.scaffold_component(
            StreamPipelineComponent, defs_path="broken_sealed", defs_yaml_contents=bad
        )
        with pytest.raises(Exception) as err, sandbox.load_component_and_build_defs(path):
            pass
        text = _chain(err.value)
        assert "broken_sealed/defs.yaml" in text and "streams.hot.steps.2" in text
        assert "encrypt.key" in text
