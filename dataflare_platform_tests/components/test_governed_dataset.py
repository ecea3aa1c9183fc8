"""GovernedDatasetComponent: a defs.yaml holding a governance spec builds the dataset's
checks through the governance check builders (in a dg sandbox project)."""

import pytest
import yaml
from dagster.components.testing import create_defs_folder_sandbox

from dataflare_platform.compliance.spec import load_dataset_spec
from dataflare_platform.component_files import GOVERNED_DATASET, find_instances
from dataflare_platform.components import GovernedDatasetComponent
from dataflare_platform.defs.governance.dataset_checks import dataset_checks


def _checks(checks) -> set[str]:
    return {k.to_user_string() for c in checks for k in c.check_keys}


def _built(defs) -> set[str]:
    return _checks([*(defs.assets or []), *(defs.asset_checks or [])])


def test_a_scaffolded_dataset_is_checked_for_freshness():
    with create_defs_folder_sandbox() as sandbox:
        path = sandbox.scaffold_component(GovernedDatasetComponent, defs_path="big_bids")
        with sandbox.load_component_and_build_defs(defs_path=path) as (component, defs):
            assert component.spec.asset == "streams/big_bids"
            assert _checks([*(defs.assets or []), *(defs.asset_checks or [])]) == {
                "streams/big_bids:freshness_check"
            }


@pytest.mark.parametrize(
    "shipped", [p for p, _ in find_instances(GOVERNED_DATASET)], ids=lambda p: p.parent.name
)
def test_each_shipped_instance_builds_the_checks_of_its_file(shipped):
    spec = load_dataset_spec(shipped)
    with create_defs_folder_sandbox() as sandbox:
        path = sandbox.scaffold_component(
            GovernedDatasetComponent,
            defs_path=shipped.parent.name,
            defs_yaml_contents=yaml.safe_load(shipped.read_text()),
        )
        with sandbox.load_component_and_build_defs(defs_path=path) as (component, defs):
            assert component.spec == spec
            assert _built(defs) == _checks(dataset_checks(spec))


def test_a_bad_spec_fails_loading_naming_the_file_and_the_field():
    with create_defs_folder_sandbox() as sandbox:
        path = sandbox.scaffold_component(
            GovernedDatasetComponent,
            defs_path="broken",
            defs_yaml_contents={
                "type": "dataflare_platform.components.GovernedDatasetComponent",
                "attributes": {"asset": "streams/x", "freshness": {"max_lag": "soon"}},
            },
        )
        # dg wraps the ConfigError in its own exceptions: the message is what matters.
        with pytest.raises(Exception) as err, sandbox.load_component_and_build_defs(path):
            pass
        text, cause = [], err.value
        while cause is not None:
            text.append(str(cause))
            cause = cause.__cause__ or cause.__context__
        assert "broken/defs.yaml" in "\n".join(text)
        assert "freshness.max_lag" in "\n".join(text)
