"""Provider info: valid against Airflow's schemas, and ProvidersManager registers the icr type."""

from __future__ import annotations

import json
from importlib import resources
from importlib.metadata import entry_points

import jsonschema
import pytest

from icr.provider import CONN_FIELDS, get_provider_info


def _schema(name: str) -> dict:
    return json.loads(resources.files("airflow").joinpath(name).read_text())


def test_entry_point_declared():
    eps = [ep for ep in entry_points(group="apache_airflow_provider") if ep.value == "icr.provider:get_provider_info"]
    assert eps, "pyproject's apache_airflow_provider entry point is not installed"
    assert eps[0].load() is get_provider_info


def test_runtime_schema():
    info = get_provider_info()
    jsonschema.validate(info, _schema("provider_info.schema.json"))
    assert info["package-name"] == "icr-installations-sync"


def test_connection_type_against_provider_yaml_schema():
    """The stricter development schema: conn-fields labels, JSON schema types, formats."""
    schema = _schema("provider.yaml.schema.json")["properties"]["connection-types"]
    ct = get_provider_info()["connection-types"]
    jsonschema.validate(ct, schema)
    assert ct[0]["connection-type"] == "icr" and ct[0]["hook-class-name"] == "icr.hooks.ICRHook"


def test_every_extra_has_label_description_and_typed_schema():
    fields = get_provider_info()["connection-types"][0]["conn-fields"]
    assert set(fields) == {
        "private_key_path", "private_key_passphrase", "api_version", "page_size", "concurrency",
        "timeout", "max_retries", "max_retry_wait", "allow_insecure_http", "max_page_size", "retry_budget",
    }
    for name, f in fields.items():
        assert f["label"] and f["description"] and "type" in f["schema"], name
    assert fields["private_key_passphrase"]["schema"]["format"] == "password"
    assert fields["page_size"]["schema"]["default"] == 100
    assert fields["api_version"]["schema"]["default"] == "2023-06-16"
    assert get_provider_info()["connection-types"][0]["conn-fields"] is not CONN_FIELDS  # a copy


def test_providers_manager_sees_icr():
    import warnings

    from airflow.providers_manager import ProvidersManager

    pm = ProvidersManager()
    assert "icr-installations-sync" in pm.providers
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        hook = pm.hooks.get("icr")
    assert hook is not None
    assert hook.hook_class_name == "icr.hooks.ICRHook"
    assert hook.connection_id_attribute_name == "icr_conn_id"
    assert hook.hook_name == "ICR App" and hook.connection_testable

    widgets = pm.connection_form_widgets
    for name in CONN_FIELDS:
        assert f"extra__icr__{name}" in widgets, name
    assert widgets["extra__icr__private_key_passphrase"].is_sensitive
    assert not widgets["extra__icr__page_size"].is_sensitive
    assert widgets["extra__icr__page_size"].field["value"] == 100
    assert widgets["extra__icr__page_size"].field["schema"]["title"] == "Page size"

    behaviour = pm.field_behaviours["icr"]
    assert behaviour["hidden_fields"] == ["schema", "port"]
    assert behaviour["relabeling"]["login"] == "App ID"
    assert behaviour["placeholders"]["extra__icr__private_key_path"].endswith(".pem")


@pytest.mark.slow
@pytest.mark.parametrize("cmd", [["providers", "hooks"]])
def test_cli_lists_icr(cmd, tmp_path):
    """`airflow providers hooks` in a fresh AIRFLOW_HOME shows the icr connection type."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    airflow = Path(sys.executable).with_name("airflow")
    env = {**os.environ, "AIRFLOW_HOME": str(tmp_path)}
    out = subprocess.run([str(airflow), *cmd, "--output", "json"], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    start = out.stdout.index("[")
    rows = json.loads(out.stdout[start:])
    icr = [r for r in rows if r.get("connection_type") == "icr"]
    assert icr and icr[0]["class"] == "icr.hooks.ICRHook" and icr[0]["package_name"] == "icr-installations-sync"
