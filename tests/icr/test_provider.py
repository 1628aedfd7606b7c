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
        "key_source", "private_key_path", "private_key_passphrase", "api_version", "page_size", "concurrency",
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


# --------------------------------------------------------------------------- key source field (issue 18 item 2)


def test_key_source_is_a_select_with_labelled_choices():
    fields = get_provider_info()["connection-types"][0]["conn-fields"]
    ks = fields["key_source"]
    assert ks["label"] == "Key source"
    assert ks["schema"]["enum"] == [None, "pem", "file"]
    assert set(ks["schema"]["values_display"]) == {"null", "pem", "file"}
    assert "Private key (PEM)" in ks["schema"]["values_display"]["pem"]
    assert ks["schema"]["values_display"]["file"] == "Private key file"
    assert list(fields)[0] == "key_source"  # shown first, above the file path
    # The help texts describe the switch, not the old "file when the PEM field is empty" alone.
    assert "Key source" in fields["private_key_path"]["description"]
    assert "Key source" in get_provider_info()["connection-types"][0]["ui-field-behaviour"]["placeholders"]["password"]


def test_key_source_is_not_redacted_by_airflow():
    """Airflow masks extras whose name contains 'private_key' ('***' in the edit form): a select
    named like that would lose its value in the form, so the field is called key_source."""
    from airflow._shared.secrets_masker import should_hide_value_for_key

    assert not should_hide_value_for_key("key_source")
    assert should_hide_value_for_key("private_key_source")  # why not that name


def test_providers_manager_offers_the_key_source_select():
    import warnings

    from airflow.providers_manager import ProvidersManager

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        widget = ProvidersManager().connection_form_widgets["extra__icr__key_source"]
    assert not widget.is_sensitive
    assert widget.field["value"] is None and widget.field["schema"]["enum"] == [None, "pem", "file"]


# --------------------------------------------------------------------------- the Test button (issue 18 item 1)
#
# Airflow 3.3.2's connection list posts ``port: Number(connection.port)`` to
# POST /api/v2/connections/test, i.e. 0 for a connection saved without a port (the ICR form
# hides it), and the API refuses a port that differs from the stored one (NULL) with 400 "The host
# or port to test differs from the stored connection". The provider's plugin drops that 0 from
# the body of an ``icr`` test request: the hook never uses a port (the base URL carries it).

APP = "d23967cc-dd16-452b-8af4-869965745978"


def _list_button_body(**overrides):
    """What the UI's list button posts for a connection saved from the ICR form."""
    body = {"conn_type": "icr", "connection_id": "icr_default", "description": "", "extra": "{}",
            "host": "http://127.0.0.1:8765", "login": APP, "password": "***", "port": 0, "schema": ""}
    body.update(overrides)
    return body


async def _echo_app(scope, receive, send):
    """A plain ASGI app: answers with the body and Content-Length it was given."""
    chunks, more = [], True
    while more:
        message = await receive()
        chunks.append(message.get("body", b""))
        more = message.get("more_body", False)
    raw = b"".join(chunks)
    headers = dict(scope["headers"])
    answer = json.dumps({"raw": raw.decode("utf-8", "replace"), "length": len(raw),
                         "content_length": headers.get(b"content-length", b"").decode()}).encode()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(answer)).encode())]})
    await send({"type": "http.response.body", "body": answer})


@pytest.fixture
def echo_client():
    """The middleware in front of a real ASGI app, over Starlette's test client."""
    from starlette.testclient import TestClient

    from icr.connection_test_port import PortZeroMiddleware

    return TestClient(PortZeroMiddleware(_echo_app))  # no lifespan: the echo app answers http only


def test_test_button_port_zero_dropped_for_icr(echo_client):
    seen = echo_client.post("/api/v2/connections/test", json=_list_button_body()).json()
    body = json.loads(seen["raw"])
    assert "port" not in body
    assert body == {k: v for k, v in _list_button_body().items() if k != "port"}
    assert seen["content_length"] == str(seen["length"])


@pytest.mark.parametrize(
    "path,body",
    [
        ("/api/v2/connections/test", _list_button_body(conn_type="postgres")),  # not ours
        ("/api/v2/connections/test", _list_button_body(port=8765)),  # a real port: Airflow compares it
        ("/api/v2/connections/test", _list_button_body(port=None)),
        ("/api/v2/connections", _list_button_body()),  # saving is not testing
    ],
    ids=["other-type", "real-port", "null-port", "other-route"],
)
def test_test_button_other_requests_untouched(echo_client, path, body):
    raw = json.dumps(body)
    seen = echo_client.post(path, content=raw, headers={"content-type": "application/json"}).json()
    assert seen["raw"] == raw


def test_test_button_bad_json_untouched(echo_client):
    seen = echo_client.post("/api/v2/connections/test", content=b'{"conn_type": "icr", "port": 0',
                            headers={"content-type": "application/json"}).json()
    assert seen["raw"] == '{"conn_type": "icr", "port": 0'


def test_plugin_registers_the_middleware():
    """The airflow.plugins entry point is what the api-server loads (no plugins folder needed)."""
    from airflow import plugins_manager

    from icr.connection_test_port import ICRConnectionTestPlugin, PortZeroMiddleware

    eps = [ep for ep in entry_points(group="airflow.plugins") if ep.value.startswith("icr.")]
    assert ICRConnectionTestPlugin in [ep.load() for ep in eps]
    _apps, middlewares = plugins_manager.get_fastapi_plugins()
    assert [m["middleware"] for m in middlewares if m["middleware"] is PortZeroMiddleware]
