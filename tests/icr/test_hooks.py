"""ICRHook: connection (via AIRFLOW_CONN_ICR_DEFAULT) → client, extras parsing, test_connection()."""

from __future__ import annotations

import json
import logging
from urllib.parse import quote

import pytest
from cryptography.hazmat.primitives import serialization

from icr.client import ICRClient
from icr.errors import ICRConfigError
from icr.hooks import ICRHook
from icr.paging import InstallationPager

from .conftest import APP_ID, PASSPHRASE, needs_simulator, pem_body


@pytest.fixture
def sim_conn(simulator, set_icr_conn):
    """The default connection pointing at the simulator, with tiny retry settings."""

    def configure(**extra):
        extra.setdefault("max_retries", 3)
        set_icr_conn(host=simulator.base_url, login=simulator.app_id, password=simulator.private_key_pem, extra=extra)
        return simulator

    return configure


# --------------------------------------------------------------------------- wiring


def test_hook_class_attributes():
    assert ICRHook.conn_name_attr == "icr_conn_id"
    assert ICRHook.default_conn_name == "icr_default"
    assert ICRHook.conn_type == "icr"
    assert ICRHook.hook_name == "ICR App"
    b = ICRHook.get_ui_field_behaviour()
    assert set(b["hidden_fields"]) == {"schema", "port"}
    assert b["relabeling"] == {"host": "API base URL", "login": "App ID", "password": "Private key (PEM)"}


@needs_simulator
def test_installations_through_the_hook(sim_conn, caplog):
    sim = sim_conn(page_size="250", concurrency="2", max_page_size="1000")
    sim.config.max_page_size = 1000
    hook = ICRHook()
    client = hook.get_conn()
    assert isinstance(client, ICRClient) and hook.get_conn() is client
    pager = hook.installations()
    assert isinstance(pager, InstallationPager) and pager.page_size == 250 and pager.concurrency == 2
    ids = [r["id"] for page in pager for r in page.records]
    assert set(ids) == sim.truth_ids() and pager.report.complete
    assert client.stats.requests == 4
    assert hook.installations(page_size=500, concurrency=1).page_size == 500
    assert hook.installations(page_size=125).page_size == 125 and hook.installations().page_size == 250
    assert pem_body(sim.private_key_pem) not in caplog.text
    assert client.auth.token() not in caplog.text
    assert client.auth.token() not in repr(hook) + repr(client) + repr(pager)


@needs_simulator
def test_extras_parsed_leniently(sim_conn):
    sim_conn(timeout="7.5", max_retries="4", max_retry_wait=12, api_version="2023-06-16", allow_insecure_http="false")
    client = ICRHook().get_conn()
    assert (client.timeout, client.max_retries, client.max_retry_wait_s, client.api_version) == (7.5, 4, 12.0, "2023-06-16")


@needs_simulator
def test_prefixed_extras_accepted(sim_conn):
    sim_conn(**{"extra__icr__page_size": "30"})
    assert ICRHook().installations().page_size == 30


@needs_simulator
def test_uri_form_with_scheme_as_path(simulator, monkeypatch):
    host, port = simulator.base_url.rsplit("//", 1)[1].rsplit(":", 1)
    uri = f"icr://{quote(simulator.app_id, safe='')}:{quote(simulator.private_key_pem, safe='')}@{host}:{port}/http"
    monkeypatch.setenv("AIRFLOW_CONN_ICR_DEFAULT", uri)
    hook = ICRHook()
    assert hook.get_conn().base_url == simulator.base_url
    ok, message = hook.test_connection()
    assert ok, message


@needs_simulator
def test_key_from_file_with_passphrase(simulator, set_icr_conn, tmp_path):
    key = serialization.load_pem_private_key(simulator.private_key_pem.encode(), password=None)
    enc = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(PASSPHRASE.encode()),
    )
    path = tmp_path / "icr_private_key.pem"
    path.write_bytes(enc)
    set_icr_conn(host=simulator.base_url, login=simulator.app_id,
                 extra={"private_key_path": str(path), "private_key_passphrase": PASSPHRASE})
    ok, message = ICRHook().test_connection()
    assert ok, message
    assert PASSPHRASE not in message


def test_settings_are_derived_from_the_form_table():
    """One table: every non-secret extra of the form is a setting, and an absent extra means the
    default the form shows."""
    import dataclasses

    from icr.hooks import ICRConnectionSettings, read_extra
    from icr.provider import CONN_FIELDS, EXTRA_FIELDS

    attrs = {f.name for f in dataclasses.fields(ICRConnectionSettings)}
    assert attrs == {"conn_id", "base_url", "app_id"} | {f.setting for f in EXTRA_FIELDS if f.kind != "secret"}
    for name, field in CONN_FIELDS.items():
        assert read_extra({}, name, None) == field["schema"].get("default"), name
        if "minimum" in field["schema"] and field["schema"]["type"][0] == "integer":
            with pytest.raises(ICRConfigError, match=f"extra.{name}: must be at least"):
                read_extra({name: field["schema"]["minimum"] - 1}, name, None)


# --------------------------------------------------------------------------- bad connections


@pytest.mark.parametrize(
    "fields,field,text",
    [
        ({"host": "http://127.0.0.1:1", "password": "x"}, "login (App ID)", "is required"),
        ({"host": "http://127.0.0.1:1", "login": APP_ID}, "password (private key PEM)", "extra.private_key_path is required"),
        ({"host": "127.0.0.1:8765", "login": APP_ID, "password": "x"}, "host (API base URL)", "scheme"),
        ({"host": "http://api.carbonregistry.com", "login": APP_ID, "password": "x"}, "host (API base URL)", "unencrypted"),
        ({"login": APP_ID, "password": "x", "extra": {"page_size": "abc"}}, "extra.page_size", "whole number"),
        ({"login": APP_ID, "password": "x", "extra": {"page_size": 0}}, "extra.page_size", "at least 1"),
        ({"login": APP_ID, "password": "x", "extra": {"concurrency": "2.5"}}, "extra.concurrency", "whole number"),
        ({"login": APP_ID, "password": "x", "extra": {"timeout": "-1"}}, "extra.timeout", "> 0"),
        ({"login": APP_ID, "password": "x", "extra": {"max_retry_wait": "soon"}}, "extra.max_retry_wait", "number of seconds"),
        ({"login": APP_ID, "password": "x", "extra": {"max_retries": True}}, "extra.max_retries", "whole number"),
        ({"login": APP_ID, "password": "x", "extra": {"allow_insecure_http": "maybe"}}, "extra.allow_insecure_http", "true or false"),
        ({"login": APP_ID, "password": "x", "extra": {"private_key_path": "/nonexistent/k.pem"}}, "password (private key PEM)", "not a PEM"),
        ({"login": APP_ID, "extra": {"private_key_path": "/nonexistent/k.pem"}}, "extra.private_key_path", "does not exist"),
    ],
)
def test_bad_connection_names_the_field(set_icr_conn, fields, field, text):
    set_icr_conn(**fields)
    with pytest.raises(ICRConfigError) as ei:
        ICRHook().get_conn()
    assert ei.value.field == field
    assert text in str(ei.value) and "icr_default" in str(ei.value)
    ok, message = ICRHook().test_connection()
    assert not ok and field in message


def test_insecure_http_allowed_by_extra(set_icr_conn, keys):
    set_icr_conn(host="http://10.1.2.3:8080", login=APP_ID, password=keys.pkcs8, extra={"allow_insecure_http": "true"})
    assert ICRHook().get_conn().base_url == "http://10.1.2.3:8080"


def test_empty_host_means_production(set_icr_conn, keys):
    set_icr_conn(login=APP_ID, password=keys.pkcs1)
    assert ICRHook().get_conn().base_url == "https://api.carbonregistry.com"


def test_unknown_extras_warned_by_name_only(set_icr_conn, keys, caplog):
    set_icr_conn(login=APP_ID, password=keys.pkcs1, extra={"page_sise": "secret-looking-value"})
    with caplog.at_level(logging.WARNING):
        ICRHook().get_conn()
    assert "page_sise" in caplog.text and "secret-looking-value" not in caplog.text


def test_other_conn_id(set_icr_conn, keys):
    set_icr_conn("icr_sandbox", host="https://sandbox-api.carbonregistry.com", login=APP_ID, password=keys.pkcs8)
    assert ICRHook(icr_conn_id="icr_sandbox").get_conn().base_url == "https://sandbox-api.carbonregistry.com"


# --------------------------------------------------------------------------- test_connection


@needs_simulator
def test_test_connection_success(sim_conn):
    sim = sim_conn()
    ok, message = ICRHook().test_connection()
    assert ok, message
    assert sim.app_id in message and "1000 installations" in message
    assert sim.public_key_fingerprints[0] in message
    assert message.startswith(f"Connected to {sim.base_url} as ICR App {sim.app_id}")
    assert "BEGIN" not in message


@needs_simulator
def test_test_connection_wrong_key(simulator, set_icr_conn, keys, caplog):
    set_icr_conn(host=simulator.base_url, login=simulator.app_id, password=keys.pkcs8)
    ok, message = ICRHook().test_connection()
    assert not ok
    assert "HTTP 401" in message and "Invalid signature" in message and "fingerprint SHA256:" in message
    for text in (message, caplog.text):
        assert pem_body(keys.pkcs8) not in text and "Bearer" not in text


@needs_simulator
def test_test_connection_wrong_app_id(simulator, set_icr_conn):
    set_icr_conn(host=simulator.base_url, login="11111111-2222-4333-8444-555555555555", password=simulator.private_key_pem)
    ok, message = ICRHook().test_connection()
    assert not ok and "Unknown issuer" in message and "App ID" in message


def test_test_connection_unreachable(set_icr_conn, keys):
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    set_icr_conn(host=f"http://127.0.0.1:{port}", login=APP_ID, password=keys.pkcs8)
    ok, message = ICRHook().test_connection()
    assert not ok and "Could not reach" in message and f"127.0.0.1:{port}" in message


def test_json_conn_env_is_what_we_document(set_icr_conn, keys):
    value = set_icr_conn(host="http://127.0.0.1:8765", login=APP_ID, password=keys.pkcs8)
    assert json.loads(value)["conn_type"] == "icr"
    conn = ICRHook.get_connection("icr_default")
    assert conn.host == "http://127.0.0.1:8765" and conn.login == APP_ID


def test_page_size_above_max_page_size_is_refused(sim_conn):
    sim_conn(page_size=200)
    with pytest.raises(ICRConfigError) as ei:
        ICRHook().get_conn()
    assert "extra.page_size" in str(ei.value) and "max_page_size (100)" in str(ei.value)


def test_the_run_page_size_is_checked_against_max_page_size(sim_conn):
    sim_conn(max_page_size=300)
    hook = ICRHook()
    assert hook.installations(page_size=300).page_size == 300
    with pytest.raises(ICRConfigError) as ei:
        hook.installations(page_size=301)
    assert "the run's page_size 301" in str(ei.value) and "maximum page size 300" in str(ei.value)
    assert "extra.max_page_size" in str(ei.value)


def test_retry_budget_reaches_the_client(sim_conn):
    sim_conn(retry_budget="45")
    assert ICRHook().get_conn().retry_budget_s == 45.0
    sim_conn(retry_budget="-1")
    with pytest.raises(ICRConfigError, match="extra.retry_budget"):
        ICRHook().get_conn()


# --------------------------------------------------------------------------- key source (issue 18 item 2)
#
# The form can say which key signs: extra.key_source "pem" (the Private key (PEM) field) or "file"
# (extra.private_key_path). Absent: the PEM when one is stored, else the file (the old rule).
# Airflow keeps a stored password when the field is submitted empty or masked, so "file" must win
# over a PEM that is still stored. Test and the task log say which key is in use, never the key.


def _key_file(tmp_path, pem: str, name: str = "icr_second_key.pem") -> str:
    path = tmp_path / name
    path.write_text(pem)
    path.chmod(0o600)
    return str(path)


def _no_key_material(text: str, *pems: str) -> None:
    for pem in pems:
        assert pem_body(pem) not in text
    assert "BEGIN" not in text


@needs_simulator
def test_key_source_file_wins_over_a_stored_pem(simulator, set_icr_conn, tmp_path, caplog):
    second = simulator.add_app_key()
    first_fp, second_fp = simulator.public_key_fingerprints
    path = _key_file(tmp_path, second)
    set_icr_conn(host=simulator.base_url, login=simulator.app_id, password=simulator.private_key_pem,
                 extra={"key_source": "file", "private_key_path": path})
    with caplog.at_level(logging.INFO):
        ok, message = ICRHook().test_connection()
    assert ok, message
    assert f"key: file {path}, fingerprint {second_fp}" in message
    assert first_fp not in message
    # The task log says the same when the hook builds its client (a sync logs it once).
    assert f"key: file {path}, fingerprint {second_fp}" in caplog.text
    _no_key_material(message + caplog.text, second, simulator.private_key_pem)


@needs_simulator
def test_key_source_pem_wins_over_a_key_file(simulator, set_icr_conn, tmp_path, caplog):
    second = simulator.add_app_key()
    first_fp, second_fp = simulator.public_key_fingerprints
    set_icr_conn(host=simulator.base_url, login=simulator.app_id, password=simulator.private_key_pem,
                 extra={"key_source": "pem", "private_key_path": _key_file(tmp_path, second)})
    with caplog.at_level(logging.INFO):
        ok, message = ICRHook().test_connection()
    assert ok, message
    assert f"key: the connection's Private key (PEM) field, fingerprint {first_fp}" in message
    assert second_fp not in message
    assert "using the PEM" not in caplog.text  # no "both are set" warning: the choice is explicit
    _no_key_material(message + caplog.text, second, simulator.private_key_pem)


@needs_simulator
@pytest.mark.parametrize("with_pem", [True, False], ids=["pem-stored", "no-pem"])
def test_key_source_absent_keeps_the_old_rule(simulator, set_icr_conn, tmp_path, with_pem):
    """Existing connections without extra.key_source: the PEM when one is stored, else the file."""
    path = _key_file(tmp_path, simulator.private_key_pem, "icr.pem")
    fields = {"password": simulator.private_key_pem} if with_pem else {}
    set_icr_conn(host=simulator.base_url, login=simulator.app_id, extra={"private_key_path": path}, **fields)
    ok, message = ICRHook().test_connection()
    assert ok, message
    expected = "key: the connection's Private key (PEM) field" if with_pem else f"key: file {path}"
    assert f"{expected}, fingerprint {simulator.public_key_fingerprints[0]}" in message


def test_key_source_extra_prefixed_spelling(set_icr_conn, keys, tmp_path):
    path = _key_file(tmp_path, keys.pkcs8)
    set_icr_conn(login=APP_ID, password="not a key", extra={"extra__icr__key_source": "file", "private_key_path": path})
    hook = ICRHook()
    hook.get_conn()
    assert hook.key_description == f"file {path}"


@pytest.mark.parametrize(
    "fields,field,text",
    [
        ({"extra": {"key_source": "file"}, "password": "x"}, "extra.private_key_path",
         "is required when extra.key_source is 'file'"),
        ({"extra": {"key_source": "pem", "private_key_path": "/k.pem"}}, "password (private key PEM)",
         "is empty but extra.key_source is 'pem'"),
        ({"extra": {"key_source": "disk"}, "password": "x"}, "extra.key_source", "'pem' or 'file'"),
        ({"extra": {"key_source": 1}, "password": "x"}, "extra.key_source", "'pem' or 'file'"),
    ],
)
def test_key_source_misconfigured_names_the_field(set_icr_conn, fields, field, text):
    set_icr_conn(host="http://127.0.0.1:1", login=APP_ID, **fields)
    with pytest.raises(ICRConfigError) as ei:
        ICRHook().get_conn()
    assert ei.value.field == field and text in str(ei.value)
    ok, message = ICRHook().test_connection()
    assert not ok and field in message and text in message


@pytest.mark.parametrize(
    "fields,field",
    [
        ({"password": "***"}, "password (private key PEM)"),
        ({"extra": {"key_source": "file", "private_key_path": "***"}}, "extra.private_key_path"),
    ],
)
def test_the_ui_mask_is_never_taken_for_a_key(set_icr_conn, fields, field):
    """Airflow's UI shows stored secrets as '***': a mask that reaches the hook is named as such."""
    set_icr_conn(host="http://127.0.0.1:1", login=APP_ID, **fields)
    ok, message = ICRHook().test_connection()
    assert not ok and field in message and "Airflow's mask '***'" in message
