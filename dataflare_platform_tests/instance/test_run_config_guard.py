"""The run coordinator's rule: a run config may turn launch knobs, never deployment
settings (``instance.run_config_guard``), and a refusal is written to the audit log."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dataflare_platform.compliance.audit import AuditLog
from dataflare_platform.defs.deployment_lock import DeploymentLockedResource
from dataflare_platform.defs.governance.resources import GovernanceResource
from dataflare_platform.defs.plugins.admission import PluginAdmissionResource
from dataflare_platform.defs.plugins.resources import PluginRuntimeResource
from dataflare_platform.defs.resources import ProjectHomeResource
from dataflare_platform.errors import DeploymentOverrideError
from dataflare_platform.home import HOME_ENV_VAR
from dataflare_platform.instance.run_config_guard import (
    DEPLOYMENT_SETTINGS,
    LAUNCH_KNOBS,
    forbidden_overrides,
    refuse_overrides,
)

CLEAN = [
    None,
    {},
    {"ops": {"streams__hot_items": {"config": {"until": {"bids/0": 120}}}}},
    {"ops": {"replay": {"config": {"pipeline": "hot_items", "offsets": {"0": [0, 10]}}}}},
    {"ops": {"governance__retention": {"config": {"dry_run": True}}}},
    {"execution": {"config": {"in_process": {}}}, "loggers": {"console": {"config": {}}}},
    {"execution": {"config": {"multiprocess": {"max_concurrent": 1}}}},
]


@pytest.mark.parametrize("run_config", CLEAN)
def test_launch_knobs_pass(run_config):
    assert forbidden_overrides(run_config) == []


def _every_deployment_field():
    return [(name, field) for name, fields in DEPLOYMENT_SETTINGS.items() for field in fields]


@pytest.mark.parametrize(("resource", "field"), _every_deployment_field())
def test_every_deployment_field_is_refused_with_or_without_config(resource, field):
    path = f"resources.{resource}.config.{field}"
    spelled_with_config = {"resources": {resource: {"config": {field: "/tmp/evil"}}}}
    shorthand = {"resources": {resource: {field: "/tmp/evil"}}}
    assert forbidden_overrides(spelled_with_config) == [path]
    assert forbidden_overrides(shorthand) == [path]


@pytest.mark.parametrize(
    ("run_config", "expected"),
    [
        # the nested home of the governance resource, both spellings
        (
            {"resources": {"governance": {"config": {"dataflare": {"config": {"path": "/x"}}}}}},
            ["resources.governance.config.dataflare"],
        ),
        (
            {"resources": {"governance": {"config": {"dataflare": {"path": "/x"}}}}},
            ["resources.governance.config.dataflare"],
        ),
        # a resource nobody registered (Dagster's io manager) is deployment-only too
        (
            {"resources": {"io_manager": {"config": {"base_dir": "/x"}}}},
            ["resources.io_manager.config.base_dir"],
        ),
        # empty and odd shapes fail closed
        ({"resources": {"plugins": {}}}, ["resources.plugins"]),
        ({"resources": {"plugins": None}}, ["resources.plugins"]),
        ({"resources": {"plugins": {"config": None}}}, ["resources.plugins.config"]),
        ({"resources": "x"}, ["resources"]),
        ({"storage": {"filesystem": {}}}, ["storage"]),
        (
            {"ops": {"masked_persons": {"config": {"plugin_dir": "/x"}}}},
            ["ops.masked_persons.config.plugin_dir"],
        ),
        ({"ops": {"g": {"ops": {"inner": {"config": {"x": 1}}}}}}, ["ops.g.ops.inner.config.x"]),
        # op inputs/outputs are loaded or written by managers: not a launch knob
        ({"ops": {"replay": {"inputs": {"x": {"path": "/etc/passwd"}}}}}, ["ops.replay.inputs"]),
        # executor settings that import modules in the worker
        (
            {
                "execution": {
                    "config": {
                        "multiprocess": {
                            "max_concurrent": 2,
                            "start_method": {"forkserver": {"preload_modules": ["x"]}},
                        }
                    }
                }
            },
            ["execution.config.multiprocess.start_method"],
        ),
        # several at once, sorted, launch knobs not named
        (
            {
                "ops": {"streams__hot_items": {"config": {"until": {}}}},
                "resources": {
                    "plugins": {"config": {"plugin_dir": "/x", "fuel": 1}},
                    "dataflare": {"config": {"path": "/y"}},
                },
            },
            [
                "resources.dataflare.config.path",
                "resources.plugins.config.fuel",
                "resources.plugins.config.plugin_dir",
            ],
        ),
    ],
)
def test_refused_paths(run_config, expected):
    assert forbidden_overrides(run_config) == expected


def test_registry_matches_the_fields_the_resources_mark():
    classes: dict[str, type[DeploymentLockedResource]] = {
        "dataflare": ProjectHomeResource,
        "governance": GovernanceResource,
        "plugins": PluginRuntimeResource,
        "plugin_admission": PluginAdmissionResource,
    }
    assert set(classes) == set(DEPLOYMENT_SETTINGS)
    for key, cls in classes.items():
        assert cls.deployment_key == key
        assert cls.deployment_field_names() == dict(DEPLOYMENT_SETTINGS[key])
        # every field of a platform resource is a deployment setting
        assert set(cls.deployment_field_names()) == set(cls.model_fields)
    assert DEPLOYMENT_SETTINGS["dataflare"]["path"] == HOME_ENV_VAR


def test_every_op_config_field_of_the_code_location_is_a_reviewed_launch_knob(home):
    from dataflare_platform.definitions import defs

    exposed: set[str] = set()
    for job in defs.get_repository_def().get_all_jobs():
        for node in job.graph.iterate_node_defs():
            if node.config_schema is not None:
                config_type = node.config_schema.as_field().config_type
                exposed |= set(getattr(config_type, "fields", {}))
    assert exposed  # the walk saw the op configs
    assert exposed <= LAUNCH_KNOBS, sorted(exposed - LAUNCH_KNOBS)


def test_every_resource_of_the_code_location_is_deployment_locked(home):
    from dataflare_platform.definitions import resources

    for key, resource in resources.items():
        assert isinstance(resource, DeploymentLockedResource)
        assert resource.deployment_key == key


def test_refuse_overrides_audits_paths_not_values(tmp_path, entry_key_file):
    url = f"sqlite:///{tmp_path / 'audit.db'}"
    secret = "postgresql://u:hunter2@db/x"
    run_config = {"resources": {"governance": {"config": {"audit_url": secret}}}}
    with pytest.raises(DeploymentOverrideError) as refused:
        refuse_overrides(run_config, run_id="r1", actor="user:alice", audit_url=url)
    assert "resources.governance.config.audit_url" in str(refused.value)
    assert "hunter2" not in str(refused.value)
    with AuditLog(url) as log:
        (entry,) = log.tail()
    assert (entry.actor, entry.action, entry.subject) == (
        "user:alice",
        "deployment_override_refused",
        "run:r1",
    )
    assert "resources.governance.config.audit_url" in entry.details
    assert "hunter2" not in entry.details


def test_refuse_overrides_lets_a_clean_run_go_and_writes_nothing(tmp_path):
    url = f"sqlite:///{tmp_path / 'audit.db'}"
    refuse_overrides(CLEAN[2], run_id="r1", actor="system", audit_url=url)
    with AuditLog(url) as log:
        assert log.count() == 0


_leaf = st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=8))
_tree = st.recursive(
    _leaf,
    lambda children: st.one_of(
        st.lists(children, max_size=3),
        st.dictionaries(st.text(max_size=6), children, max_size=3),
    ),
    max_leaves=12,
)


@given(resources=st.dictionaries(st.text(min_size=1, max_size=6), _tree, min_size=1, max_size=3))
@settings(max_examples=300, deadline=None)
def test_any_resources_section_is_refused_and_never_crashes_the_guard(resources):
    """Whatever a caller puts under ``resources`` (odd shapes, odd names), the guard
    answers with paths (never raises, never lets it through), one per resource at least."""
    found = forbidden_overrides({"resources": resources, "ops": {}})
    assert found
    for name in resources:
        assert any(
            path == f"resources.{name}" or path.startswith(f"resources.{name}.") for path in found
        )


@given(run_config=st.dictionaries(st.text(max_size=8), _tree, max_size=4))
@settings(max_examples=300, deadline=None)
def test_the_guard_never_raises_on_any_mapping(run_config):
    found = forbidden_overrides(run_config)
    assert found == sorted(found)
    if "resources" in run_config and run_config["resources"] not in ({}, None, []):
        assert any(path.startswith("resources") for path in found)
