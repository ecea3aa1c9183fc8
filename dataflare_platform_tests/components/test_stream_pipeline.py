"""StreamPipelineComponent: a defs.yaml holding a pipeline spec builds the pipeline's
asset, jobs and sensor through the stream factory (in a dg sandbox project)."""

import dagster as dg
import pytest
import yaml
from dagster.components.testing import create_defs_folder_sandbox

from dataflare_platform.component_files import (
    DEFS_DIR,
    STREAM_PIPELINE,
    component_name,
    find_instances,
)
from dataflare_platform.components import StreamPipelineComponent
from dataflare_platform.defs.streams.factory import pipeline_definitions
from dataflare_platform.streams.spec import PipelineSpec
from dataflare_platform_tests.components.sandboxes import (
    built_pipeline,
    error_chain,
    pipeline_loading_error,
)


def _names(defs: dg.Definitions) -> dict[str, set[str]]:
    return {
        "assets": {k.to_user_string() for a in defs.assets or [] for k in a.keys},
        "checks": {
            k.to_user_string()
            for a in [*(defs.assets or []), *(defs.asset_checks or [])]
            for k in a.check_keys
        },
        "jobs": {j.name for j in defs.jobs or []},
        "sensors": {s.name for s in defs.sensors or []},
    }


def test_a_scaffolded_pipeline_is_a_working_pipeline():
    with create_defs_folder_sandbox() as sandbox:
        path = sandbox.scaffold_component(StreamPipelineComponent, defs_path="big_bids")
        data = yaml.safe_load((path / "defs.yaml").read_text())
        assert component_name(data["type"]) == STREAM_PIPELINE
        with sandbox.load_component_and_build_defs(defs_path=path) as (component, defs):
            assert isinstance(component, StreamPipelineComponent)
            assert component.spec.name == "big_bids"
            assert _names(defs) == {
                "assets": {"streams/big_bids"},
                "checks": {"streams/big_bids:dead_letter_rate", "streams/big_bids:lag"},
                "jobs": {"big_bids_job", "big_bids_continuous", "big_bids_workers"},
                "sensors": {"big_bids_sensor"},
            }


@pytest.mark.parametrize(
    "shipped", [p for p, _ in find_instances(STREAM_PIPELINE)], ids=lambda p: p.parent.name
)
def test_each_shipped_instance_builds_what_the_factory_builds_from_its_file(shipped):
    """The component and the data plane read the same file to the same pipeline."""
    spec = PipelineSpec.from_yaml(shipped)
    contents = yaml.safe_load(shipped.read_text())
    with built_pipeline(shipped.parent.name, contents) as (component, defs, path):
        assert component.spec.name == spec.name
        assert component.spec.model_dump() == spec.relative_to(path).model_dump()
        assert _names(defs) == _names(pipeline_definitions(spec))


def test_a_bad_spec_fails_loading_naming_the_file_and_the_field():
    shipped = DEFS_DIR / "streams" / "hot_items" / "defs.yaml"
    broken = yaml.safe_load(shipped.read_text().replace("slide: 2s", "slide: soon"))
    text = pipeline_loading_error("broken", broken)
    assert "broken/defs.yaml" in text and "streams.hot.steps.1" in text
    assert "window.sliding.slide" in text


def test_a_file_without_a_name_is_refused_by_dg_check_yaml_rules():
    with create_defs_folder_sandbox() as sandbox:
        path = sandbox.scaffold_component(
            StreamPipelineComponent,
            defs_path="nameless",
            defs_yaml_contents={
                "type": "dataflare_platform.components.StreamPipelineComponent",
                "attributes": {"sources": {}},
            },
        )
        with pytest.raises(Exception) as err, sandbox.load_component_and_build_defs(path):
            pass
        assert "name" in error_chain(err.value)
