"""The "ICR installations" dashboard in a real browser, inside a real Airflow 3 deployment.

Two runs of ``icr_installations_sync`` for today with known changes between them (the simulator
removes 5 installations and changes the permissions of 10), then a backfill of two past days;
``icr_reporting_refresh`` is never run. Then headless Chromium logs in, opens the page from
Airflow's navigation, and checks that every chart holds what the warehouse's reporting views
hold; the date-range control and a CSV download; and that without a session the plugin answers
401. Screenshots go to ``artifacts/e2e/screenshots/`` (``dashboard-*.png``); the full page is
also saved as ``artifacts/e2e/dashboard.png`` (the README's docs/images/dashboard.png).

Run alone: ``ICR_REQUIRE_E2E=1 pytest -m e2e -s tests/e2e/test_dashboard.py``.
"""

from __future__ import annotations

import csv
import io
import math
import re
import shutil
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.e2e.conftest import TIMEOUT_MS
from tests.e2e.deployment import DAG_ID, TASK_FAILURE_STATES, Deployment, wait_for
from tests.e2e.ui import Screenshots, log_in

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
#: it removes installations from the shared simulator: tests/e2e/conftest.py runs it last
CHANGES_SHARED_SIMULATOR = True

TODAY = datetime.now(timezone.utc).date()
BACKFILL = [TODAY - timedelta(days=n) for n in (5, 4)]  # apart from the other e2e tests' dates
REMOVED, UPDATED = 5, 10


# --- the warehouse, read directly (what the page must show) --------------------------------------

def _sql(dep: Deployment, sql: str, *params: Any) -> list[tuple]:
    import psycopg

    with psycopg.connect(dep.warehouse_dsn, connect_timeout=10) as conn:
        return [tuple(v.isoformat() if hasattr(v, "isoformat") else v for v in row)
                for row in conn.execute(sql, params or None).fetchall()]


def _trigger_and_wait(dep: Deployment, run_id: str, logical_date: str) -> None:
    dep.api_json("POST", f"dags/{DAG_ID}/dagRuns", json={"dag_run_id": run_id, "logical_date": logical_date})

    def finished() -> dict[str, Any] | None:
        run = dep.api_json("GET", f"dags/{DAG_ID}/dagRuns/{run_id}")
        failed = any(ti["state"] in TASK_FAILURE_STATES for ti in dep.task_instances(run_id))
        return run if run["state"] in ("success", "failed") or failed else None

    run = wait_for(f"run {run_id}", finished, 600, dep.procs, interval_s=3)
    assert run["state"] == "success", dep.explain_failed_runs([run])


@pytest.fixture(scope="module")
def synced(airflow_deployment: Deployment) -> dict[str, Any]:
    """A sync, known changes, a second sync, a two-day backfill; what the simulator changed."""
    dep = airflow_deployment
    dep.unpause()
    stamp = datetime.now(timezone.utc)
    _trigger_and_wait(dep, f"manual__e2e_dashboard_before_{stamp:%H%M%S}", (stamp - timedelta(minutes=2)).isoformat())
    resp = requests.post(f"{dep.simulator['base_url']}/_sim/changes", json={"remove": REMOVED, "update": UPDATED},
                         timeout=30)
    resp.raise_for_status()
    changes = resp.json()
    _trigger_and_wait(dep, f"manual__e2e_dashboard_after_{stamp:%H%M%S}", stamp.isoformat())
    first, last = BACKFILL[0].isoformat(), BACKFILL[-1].isoformat()
    dep.api_json("POST", "backfills", json={"dag_id": DAG_ID, "from_date": f"{first}T00:00:00Z",
                                            "to_date": f"{last}T23:59:59Z", "reprocess_behavior": "none",
                                            "max_active_runs": 1})
    runs = dep.wait_for_backfill(first, last, expected_runs=len(BACKFILL))
    assert all(r["state"] == "success" for r in runs), dep.explain_failed_runs(runs)
    return {"removed": {i.lower() for i in changes["removed"]}, "updated": changes["updated"]}


def test_known_changes_reach_the_reporting_views_without_the_refresh_dag(airflow_deployment, synced):
    dep = airflow_deployment
    refresh_runs = dep.api_json("GET", "dags/icr_reporting_refresh/dagRuns")["dag_runs"]
    assert refresh_runs == [], "the test must not need icr_reporting_refresh"
    # Every reporting object answers (issue 18 item 3).
    objects = [r[0] for r in _sql(dep, "SELECT relname FROM pg_class WHERE relname LIKE 'icr\\_report\\_%' "
                                       "AND relkind IN ('r', 'v', 'm') ORDER BY relname")]
    assert "icr_report_dashboard_summary" in objects
    for name in objects:
        _sql(dep, f"SELECT * FROM {name} LIMIT 5")
    (today, prev, removed), = _sql(dep, "SELECT snapshot_date, compared_to, removed FROM icr_report_new_removed_daily "
                                        "WHERE snapshot_date = %s", TODAY)
    assert prev is not None and prev < today
    active_before = {r[0] for r in _sql(dep, "SELECT installation_id::text FROM icr_installation_daily "
                                             "WHERE snapshot_date = %s", prev)}
    assert removed == len(synced["removed"] & active_before) > 0
    for day in BACKFILL:
        assert _sql(dep, "SELECT count(*) FROM icr_report_daily_counts WHERE snapshot_date = %s", day) == [(1,)]


# --- the browser --------------------------------------------------------------------------------

@pytest.fixture
def page(browser, airflow_deployment: Deployment, request) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1440, "height": 1100}, accept_downloads=True)
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    page.shots = Screenshots(page, airflow_deployment.artifacts / "screenshots", prefix="dashboard-")
    yield page
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed:
        try:
            page.shots.shot(f"FAILED-{page.shots.current}", full_page=True)
        except Exception:  # noqa: BLE001 - the page may be gone
            pass
    context.close()


def _dashboard_frame(page: Any) -> Any:
    """The frame in which Airflow's UI shows the plugin's page, once its charts are drawn."""
    frame = page.wait_for_selector("iframe[src*='icr-dashboard']").content_frame()
    frame.wait_for_selector("body[data-loaded]")
    return frame


def _chart(frame: Any, name: str) -> dict[str, Any]:
    return frame.evaluate("""name => {
        const c = Chart.getChart('chart-' + name);
        return {labels: c.data.labels, datasets: c.data.datasets.map(d => ({label: d.label, data: d.data}))};
    }""", name)


def _per_key(rows: list[tuple], dates: list[str]) -> dict[str, list[Any]]:
    """rows (date, key, value) -> {key: [value per date, 0 when missing]}."""
    out: dict[str, dict[str, Any]] = {}
    for day, key, value in rows:
        out.setdefault("(none)" if key is None else key, {})[day] = value
    return {k: [v.get(d, 0) for d in dates] for k, v in out.items()}


def _check_breakdown(chart: dict[str, Any], expected: dict[str, list[Any]], what: str, other: bool = True) -> None:
    """Each named series equals the warehouse's; the largest are shown; "Other (n)" sums the rest
    (``other=False``: the rest is left out)."""
    shown = {d["label"]: d["data"] for d in chart["datasets"]}
    named = {k: v for k, v in shown.items() if not k.startswith("Other (")}
    for key, values in named.items():
        assert values == expected[key], f"{what} {key}: the chart shows {values}, the warehouse has {expected[key]}"
    rest = [k for k in expected if k not in named]
    smallest_shown = min(v[-1] for v in named.values())
    assert all(expected[k][-1] <= smallest_shown for k in rest), f"{what}: a larger series is left out"
    summed = next((v for k, v in shown.items() if k.startswith("Other (")), None)
    if rest and other:
        assert summed == [sum(expected[k][i] for k in rest) for i in range(len(chart["labels"]))], what
    else:
        assert summed is None, what


def test_dashboard_in_airflows_navigation_shows_the_warehouse(page, airflow_deployment, synced, say):
    from playwright.sync_api import expect

    dep = airflow_deployment
    log_in(page, dep)

    # 1. Airflow's navigation has the page; it opens inside Airflow's UI.
    nav = page.get_by_role("link", name="ICR installations")
    expect(nav).to_be_visible()
    nav.click()
    page.wait_for_url(re.compile(r".*/plugin/icr-installations$"))
    frame = _dashboard_frame(page)
    page.wait_for_load_state("networkidle")
    page.shots.shot("opened-from-navigation")

    # 2. Every chart holds what the reporting views hold, for the range the page shows.
    start, end = frame.input_value("#start"), frame.input_value("#end")
    daily = _sql(dep, "SELECT snapshot_date, active, new, removed FROM icr_report_daily_counts "
                      "WHERE snapshot_date BETWEEN %s AND %s ORDER BY snapshot_date", start, end)
    dates = [r[0] for r in daily]
    assert end == TODAY.isoformat() and BACKFILL[0].isoformat() in dates, (start, end, dates)
    active = _chart(frame, "active")
    assert (active["labels"], active["datasets"][0]["data"]) == (dates, [r[1] for r in daily])
    changes = {d["label"]: d["data"] for d in _chart(frame, "changes")["datasets"]}
    assert (changes["New"], changes["Removed"]) == ([r[2] for r in daily], [r[3] for r in daily])
    assert changes["Removed"][-1] > 0  # the simulator's removals, today
    by_type = _sql(dep, "SELECT snapshot_date, organization_type, installations FROM icr_report_active_by_org_type_daily "
                        "WHERE snapshot_date BETWEEN %s AND %s", start, end)
    _check_breakdown(_chart(frame, "by_type"), _per_key(by_type, dates), "by type")
    by_country = _sql(dep, "SELECT snapshot_date, organization_country_code, installations "
                           "FROM icr_report_active_by_country_daily WHERE snapshot_date BETWEEN %s AND %s", start, end)
    _check_breakdown(_chart(frame, "by_country"), _per_key(by_country, dates), "by country")
    adoption = _sql(dep, "SELECT snapshot_date, permission || ': ' || access, installations, active "
                         "FROM icr_report_permission_adoption_daily WHERE snapshot_date BETWEEN %s AND %s", start, end)
    # % of the day's active installations, to one decimal, as the page rounds it (Math.round).
    shares = [(d, k, math.floor(1000 * n / a + 0.5) / 10) for d, k, n, a in adoption]
    _check_breakdown(_chart(frame, "permissions"), _per_key(shares, dates), "permission adoption", other=False)
    runs = _sql(dep, "SELECT run_id, status FROM icr_sync_runs ORDER BY started_at DESC LIMIT 20")
    cells = frame.locator("#runs tbody tr").evaluate_all(
        "rows => rows.map(r => [r.cells[0].textContent, r.cells[2].textContent])")
    assert [tuple(c) for c in cells] == runs
    expect(frame.locator("#kpi-active")).to_have_text(f"{daily[-1][1]:,}")
    expect(frame.locator("#kpi-removed")).to_have_text(f"{sum(r[3] or 0 for r in daily):,}")
    frame.locator("#runs").scroll_into_view_if_needed()
    page.shots.shot("runs")
    frame.locator("h1").scroll_into_view_if_needed()

    # 3. The whole page, for the README: a window tall enough for Airflow's frame to hold it all.
    page.set_viewport_size({"width": 1440, "height": 1780})
    frame.wait_for_timeout(500)  # the charts redraw for the new size (animation is off)
    path = page.shots.shot("full")
    shutil.copy(path, dep.artifacts / "dashboard.png")
    page.set_viewport_size({"width": 1440, "height": 1100})

    # 4. The date-range control: only the backfilled days.
    first, last = BACKFILL[0].isoformat(), BACKFILL[-1].isoformat()
    frame.fill("#start", first)
    frame.fill("#end", last)
    frame.get_by_role("button", name="Apply").click()
    frame.wait_for_selector(f"body[data-loaded='{first}..{last}']")
    assert _chart(frame, "active")["labels"] == [first, last]
    page.shots.shot("date-range")

    # 5. A CSV download of a chart's data: what the view holds for that range.
    with page.expect_download() as got:
        frame.locator("a.csv[data-chart='by_type']").click()
    download = got.value
    assert download.suggested_filename == f"icr_by_type_{first}_{last}.csv"
    rows = list(csv.reader(io.StringIO(Path(download.path()).read_text())))
    assert rows[0] == ["snapshot_date", "organization_type", "installations"]
    wanted = _sql(dep, "SELECT snapshot_date, organization_type, installations FROM icr_report_active_by_org_type_daily "
                       "WHERE snapshot_date BETWEEN %s AND %s ORDER BY snapshot_date, organization_type", first, last)
    assert rows[1:] == [[str(v) for v in r] for r in wanted]
    say(f"\ne2e dashboard: {len(dates)} snapshot dates {dates[0]}..{dates[-1]}, today {daily[-1][1]} active, "
        f"removed {daily[-1][3]}; screenshots dashboard-*.png in {dep.artifacts / 'screenshots'}")


def test_without_a_session_the_dashboard_answers_401(browser, airflow_deployment):
    dep = airflow_deployment
    context = browser.new_context()
    try:
        page = context.new_page()
        response = page.goto(f"{dep.base_url}/icr-dashboard/")
        assert response.status == 401
        assert "ICR installations" not in page.content()
        for path in ("api/range", f"api/data/active?start={BACKFILL[0]}&end={TODAY}",
                     f"api/data/runs?start={TODAY}&end={TODAY}&format=csv", "static/dashboard.js"):
            assert context.request.get(f"{dep.base_url}/icr-dashboard/{path}").status == 401, path
    finally:
        context.close()
