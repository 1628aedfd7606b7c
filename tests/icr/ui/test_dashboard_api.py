"""The dashboard plugin's endpoints, mounted by Airflow's own API app (``create_app``) with the
plugin loaded through its ``airflow.plugins`` entry point, a real SimpleAuthManager login and
real JWTs; the data comes from warehouses (SQLite and PostgreSQL) after real syncs."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import jwt
import pytest
from sqlalchemy.engine import make_url

from tests.icr.warehouse.test_reporting import PER_DAY_VIEWS, _day, _records, _sync, view_rows

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[3]
PASSWORD = "dashboard-test-password"
JWT_SECRET = "icr-dashboard-tests-" + "x" * 48
CHART_VIEWS = {  # chart -> the view its rows come from
    "active": "icr_report_daily_counts",
    "changes": "icr_report_new_removed_daily",
    "by_type": "icr_report_active_by_org_type_daily",
    "by_country": "icr_report_active_by_country_daily",
    "permissions": "icr_report_permission_adoption_daily",
}


@pytest.fixture(scope="module")
def api() -> Iterator[Any]:
    """Airflow's API app (core) on a migrated metadata DB, with users admin and a no-access one."""
    from fastapi.testclient import TestClient

    home = Path(os.environ["AIRFLOW_HOME"])  # the session's (tests/conftest.py)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW_CONN_", "AIRFLOW__"))}
    proc = subprocess.run([str(Path(sys.executable).with_name("airflow")), "db", "migrate"], env=env,
                          cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    passwords = home / "dashboard_test_passwords.json"
    passwords.write_text(json.dumps({"admin": PASSWORD}))
    mp = pytest.MonkeyPatch()
    mp.setenv("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS", "admin:admin")
    mp.setenv("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE", str(passwords))
    mp.setenv("AIRFLOW__API_AUTH__JWT_SECRET", JWT_SECRET)
    from airflow.api_fastapi.app import create_app

    client = TestClient(create_app("core"), raise_server_exceptions=False)
    try:
        yield client
    finally:
        mp.undo()


@pytest.fixture(scope="module")
def token(api) -> str:
    resp = api.post("/auth/token", json={"username": "admin", "password": PASSWORD})
    assert resp.status_code == 201, resp.text
    return resp.json()["access_token"]


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def point_at(monkeypatch, warehouse) -> None:
    """The icr_warehouse connection, as a user sets it (AIRFLOW_CONN_ICR_WAREHOUSE, JSON)."""
    url = make_url(str(warehouse.engine.url))
    if warehouse.dialect_name == "sqlite":
        conn = {"conn_type": "sqlite", "host": url.database}
    else:
        conn = {"conn_type": "postgres", "host": url.host, "port": url.port, "login": url.username,
                "schema": url.database}
    monkeypatch.setenv("AIRFLOW_CONN_ICR_WAREHOUSE", json.dumps(conn))


PROTECTED = ["/icr-dashboard/", "/icr-dashboard/static/dashboard.js", "/icr-dashboard/static/vendor/chart.umd.min.js",
             "/icr-dashboard/api/range", "/icr-dashboard/api/data/active?start=2026-01-01&end=2026-12-31",
             "/icr-dashboard/api/data/runs?start=2026-01-01&end=2026-12-31&format=csv"]


@pytest.mark.parametrize("path", PROTECTED)
def test_every_endpoint_answers_401_without_a_session_or_token(api, path):
    resp = api.get(path)
    assert resp.status_code == 401, (path, resp.status_code, resp.text[:200])
    assert "ICR" not in resp.text and "<html" not in resp.text


def test_a_forged_or_expired_token_gets_401_too(api, token):
    claims = jwt.decode(token, options={"verify_signature": False})
    forged = jwt.encode({**claims, "exp": int(time.time()) + 600}, "not-the-secret-" + "y" * 48, algorithm="HS512")
    expired = jwt.encode({**claims, "iat": int(time.time()) - 7200, "nbf": int(time.time()) - 7200,
                          "exp": int(time.time()) - 3600}, JWT_SECRET, algorithm="HS512",
                         headers={"kid": jwt.get_unverified_header(token).get("kid")})
    for bad in (forged, expired, "not-a-jwt"):
        assert api.get("/icr-dashboard/api/range", headers=auth(bad)).status_code == 401
        assert api.get("/icr-dashboard/", cookies={"_token": bad}).status_code == 401


def test_the_page_and_its_files_are_served_by_the_plugin(api, token):
    page = api.get("/icr-dashboard/", headers=auth(token))
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "<h1>ICR installations</h1>" in page.text
    # Every script and style is the plugin's own (relative URLs: no CDN, no other host).
    assert 'src="static/vendor/chart.umd.min.js"' in page.text and "http" not in page.text.split("<body>")[0]
    assert "//" not in "".join(line for line in page.text.splitlines() if "src=" in line or "href=" in line)
    js = api.get("/icr-dashboard/static/vendor/chart.umd.min.js", cookies={"_token": token})
    assert js.status_code == 200 and js.headers["content-type"].startswith("text/javascript")
    assert js.content == (REPO / "plugins/icr/ui/static/vendor/chart.umd.min.js").read_bytes()
    assert api.get("/icr-dashboard/static/../app.py", headers=auth(token)).status_code == 404
    assert api.get("/icr-dashboard/static/app.py", headers=auth(token)).status_code == 404


def test_airflow_lists_the_plugin_and_its_navigation_entry(api, token):
    resp = api.get("/api/v2/plugins", headers=auth(token))
    assert resp.status_code == 200, resp.text
    plugin = next(p for p in resp.json()["plugins"] if p["name"] == "icr_dashboard")
    assert plugin["fastapi_apps"][0]["url_prefix"] == "/icr-dashboard"
    view = plugin["external_views"][0]
    assert (view["name"], view["href"], view["destination"], view["url_route"]) == (
        "ICR installations", "icr-dashboard/", "nav", "icr-installations")


def test_chart_data_is_what_the_views_hold_as_json_and_csv(api, token, warehouse, monkeypatch):
    recs = _records()
    _sync(warehouse, recs, 0)
    for day in (3, 2, 1):
        _sync(warehouse, recs, day)
    changed = [r for r in recs if r is not recs[4]]
    _sync(warehouse, changed, 0)
    point_at(monkeypatch, warehouse)

    rng = api.get("/icr-dashboard/api/range", headers=auth(token)).json()
    assert (rng["first"], rng["last"], rng["start"], rng["end"]) == (_day(3), _day(0), _day(3), _day(0))
    start, end = _day(2), _day(0)
    for chart, view in CHART_VIEWS.items():
        wanted = [list(r) for r in view_rows(warehouse, view) if start <= r[0] <= end]
        resp = api.get(f"/icr-dashboard/api/data/{chart}", params={"start": start, "end": end},
                       cookies={"_token": token})
        assert resp.status_code == 200, resp.text
        body = resp.json()
        if chart == "active":  # two of the view's columns
            columns, expected = ["snapshot_date", "active"], [[r[0], r[2]] for r in wanted]
        else:
            columns, expected = [c.strip() for c in PER_DAY_VIEWS[view][0].split(",")], wanted
        assert (body["columns"], body["rows"]) == (columns, expected), chart
        text = api.get(f"/icr-dashboard/api/data/{chart}", params={"start": start, "end": end, "format": "csv"},
                       headers=auth(token))
        assert text.headers["content-type"].startswith("text/csv")
        assert f'filename="icr_{chart}_{start}_{end}.csv"' in text.headers["content-disposition"]
        rows = list(csv.reader(io.StringIO(text.text)))
        assert rows[0] == body["columns"]
        assert rows[1:] == [["" if v is None else str(v) for v in row] for row in body["rows"]]
    active = api.get("/icr-dashboard/api/data/active", params={"start": start, "end": end}, headers=auth(token))
    assert active.json()["rows"] == [[_day(2), 12], [_day(1), 13], [_day(0), 12]]

    runs = api.get("/icr-dashboard/api/data/runs", params={"start": start, "end": end}, headers=auth(token)).json()
    col = {c: i for i, c in enumerate(runs["columns"])}
    assert len(runs["rows"]) == 5 and all(r[col["status"]] == "success" for r in runs["rows"])
    latest = runs["rows"][0]
    assert (latest[col["snapshot_date"]], latest[col["removed"]], latest[col["active_after"]]) == (_day(0), 1, 12)
    assert latest[col["duration_seconds"]] >= 0


def test_bad_requests_say_what_is_wrong(api, token, sqlite_warehouse, monkeypatch):
    point_at(monkeypatch, sqlite_warehouse)
    resp = api.get("/icr-dashboard/api/data/nope", params={"start": "2026-01-01", "end": "2026-01-02"},
                   headers=auth(token))
    assert resp.status_code == 404 and "active" in resp.json()["detail"]
    resp = api.get("/icr-dashboard/api/data/active", params={"start": "2026-02-01", "end": "2026-01-01"},
                   headers=auth(token))
    assert resp.status_code == 422 and "before" in resp.json()["detail"]
    # An empty warehouse (no sync yet): a clear 503, not a traceback.
    resp = api.get("/icr-dashboard/api/range", headers=auth(token))
    assert resp.status_code == 503, resp.text
    assert "icr_installations_sync" in resp.json()["detail"] and "no such table" in resp.json()["detail"]
