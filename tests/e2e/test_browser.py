"""The Airflow UI in a real browser: log in, backfill the DAG, see the runs succeed, and the
"ICR App" connection form; then a user's first day (issue 18): create icr_default in the form,
Test it from the list, switch its Key source to a key file, Test again, sync, read the reports.

Headless Debian Chromium (``/usr/bin/chromium``) driven by Playwright for Python (no Playwright
browser download). Each step saves a screenshot under ``artifacts/e2e/screenshots/``; a failing
step saves ``FAILED-<step>.png``.

Run alone: ``pytest -m e2e -s tests/e2e/test_browser.py``.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from tests.e2e.conftest import TIMEOUT_MS
from tests.e2e.deployment import DAG_ID, Deployment
from tests.e2e.ui import Screenshots, log_in

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


# Two past days, apart from the REST test's range.
TODAY = datetime.now(timezone.utc).date()
DAYS = [TODAY - timedelta(days=n) for n in (8, 7)]

# The ICR App form: relabelled standard fields and the provider's extra fields (conn-fields).
STANDARD_LABELS = ["API base URL", "App ID", "Private key (PEM)"]
EXTRA_LABELS = ["Private key file", "Private key passphrase", "API version", "Page size", "Allow plain HTTP"]


@pytest.fixture
def page(browser, airflow_deployment: Deployment, request):
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    steps = Screenshots(page, airflow_deployment.artifacts / "screenshots")
    page.steps = steps
    yield page
    report = getattr(request.node, "rep_call", None)  # set by conftest's makereport hook
    if report is not None and report.failed:
        try:
            steps.shot(f"FAILED-{steps.current}", full_page=True)
        except Exception:  # noqa: BLE001 - the page may be gone
            pass
    context.close()


def _pick_datetime(page, dialog, index: int, day: str, time_of_day: str) -> None:
    """Fill the UI's date-time popover (a Date "YYYY/MM/DD" and a Time "HH:mm" field)."""
    dialog.get_by_test_id("datetime-input").nth(index).click()
    popover = page.locator("[data-scope=popover][data-part=content]:visible").last
    popover.get_by_placeholder("YYYY/MM/DD").fill(day.replace("-", "/"))
    popover.get_by_placeholder("HH:mm").fill(time_of_day)
    page.keyboard.press("Escape")


def test_ui_login_backfill_and_connection_form(page, airflow_deployment: Deployment, say):
    from playwright.sync_api import expect

    dep = airflow_deployment
    steps = page.steps
    first, last = DAYS[0].isoformat(), DAYS[-1].isoformat()

    # 1. Log in (SimpleAuthManager's login form, a real user and password).
    log_in(page, dep, page.steps)

    # 2. The DAG.
    page.goto(f"{dep.base_url}/dags/{DAG_ID}")
    expect(page.get_by_text(DAG_ID).first).to_be_visible()
    for task_id in ("migrate_warehouse", "extract_installations", "load_warehouse"):
        expect(page.get_by_text(task_id, exact=True).first).to_be_visible()
    page.wait_for_load_state("networkidle")
    steps.shot("dag")

    # 3. Trigger -> Backfill, a date range, submit.
    page.get_by_role("button", name="Trigger").first.click()
    dialog = page.get_by_role("dialog")
    dialog.get_by_text("Backfill", exact=True).click()
    expect(dialog.get_by_text(f"Run Backfill - {DAG_ID}")).to_be_visible()
    _pick_datetime(page, dialog, 0, first, "00:00")
    _pick_datetime(page, dialog, 1, last, "23:59")
    expect(dialog.get_by_text(f"{len(DAYS)} runs will be triggered")).to_be_visible()
    steps.shot("backfill-dialog")
    dialog.get_by_role("button", name="Run Backfill").click()
    expect(page.get_by_text("Backfill generated")).to_be_visible()
    steps.shot("backfill-submitted")

    # 4. The runs succeed (waited for through the API), and the UI's runs list says so.
    runs = dep.wait_for_backfill(first, last, expected_runs=len(DAYS))
    assert all(r["state"] == "success" for r in runs), dep.explain_failed_runs(runs)
    page.goto(f"{dep.base_url}/dags/{DAG_ID}/runs")
    for run in runs:
        row = page.get_by_role("row").filter(has_text=run["dag_run_id"])
        expect(row).to_be_visible()
        expect(row).to_contain_text("Success")
        expect(row).to_contain_text("Backfill")
    page.wait_for_load_state("networkidle")
    steps.shot("backfill-runs-succeeded")

    # 5. Admin -> Connections: icr_default, stored by the harness through the REST API (its Test
    # button: test_connection_made_in_the_form).
    page.get_by_role("button", name="Admin").click()
    page.get_by_role("menuitem", name="Connections").click()
    row = page.get_by_role("row").filter(has_text="icr_default")
    expect(row).to_be_visible()
    expect(row).to_contain_text("icr")
    expect(row).to_contain_text(dep.simulator["base_url"])
    steps.shot("connections")

    # 6. Add -> type "ICR App": its own field labels.
    page.get_by_role("button", name="Add Connection").click()
    form = page.get_by_role("dialog")
    form.get_by_role("combobox").click()
    form.get_by_role("combobox").fill("ICR")
    page.get_by_role("option", name="ICR App").click()
    for label in STANDARD_LABELS:
        expect(form.get_by_text(label, exact=True)).to_be_visible()
    steps.shot("connection-form-icr-app")
    form.get_by_text("Extra Fields", exact=True).click()
    for label in EXTRA_LABELS:
        expect(form.get_by_text(label, exact=True).first).to_be_visible()
    page.set_viewport_size({"width": 1400, "height": 1700})  # the whole list of extra fields
    steps.shot("connection-form-extra-fields")

    say(f"\ne2e browser: backfill {first}..{last} from the UI: "
        + ", ".join(f"{r['dag_run_id']} {r['state']}" for r in runs))
    say("e2e browser screenshots: " + ", ".join(p.name for p in steps.saved))


# --------------------------------------------------------------------------- a user's first day (issue 18)

FORM_DAY = TODAY - timedelta(days=20)  # apart from the other e2e tests' days
KEY_FROM_PEM = "key: the connection's Private key (PEM) field"
REFRESH_DAG_ID = "icr_reporting_refresh"


def _connections_page(page, dep: Deployment) -> None:
    page.goto(f"{dep.base_url}/connections")
    page.wait_for_load_state("networkidle")


def _test_from_list(page, message_part: str):
    """Press the row's Test Connection button; returns (what the UI posted, the API's answer)."""
    from playwright.sync_api import expect

    row = page.get_by_role("row").filter(has_text="icr_default")
    with page.expect_response(lambda r: r.url.endswith("/api/v2/connections/test")) as answer:
        row.get_by_role("button", name="Test Connection").click()
    result = answer.value.json()
    assert answer.value.status == 200 and result["status"] is True, result
    toast = page.locator("[data-scope=toast][data-part=root]").filter(has_text=message_part)
    expect(toast).to_contain_text("Test Connection Successful")
    return answer.value.request.post_data_json, result["message"], toast


def _report_objects(dep: Deployment) -> dict[str, str]:
    """Every icr_report_* relation in the warehouse -> "N rows" or the error of SELECT count(*)."""
    import psycopg
    import psycopg.sql

    out: dict[str, str] = {}
    with psycopg.connect(dep.warehouse_dsn, connect_timeout=10, autocommit=True) as conn:
        names = [r[0] for r in conn.execute(
            "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = current_schema() AND c.relname LIKE 'icr\\_report\\_%' "
            "AND c.relkind IN ('r', 'v', 'm', 'p', 'f') ORDER BY 1")]
        for name in names:
            try:
                count = conn.execute(psycopg.sql.SQL("SELECT count(*) FROM {}").format(
                    psycopg.sql.Identifier(name))).fetchone()[0]
                out[name] = f"{count} rows"
            except psycopg.Error as exc:
                out[name] = f"ERROR {str(exc).strip().splitlines()[0]}"
    return out


def _task_log(dep: Deployment, run_id: str, task_id: str) -> str:
    ti = next(t for t in dep.task_instances(run_id) if t["task_id"] == task_id)
    content = dep.api_json("GET", f"dags/{DAG_ID}/dagRuns/{run_id}/taskInstances/{task_id}/logs/"
                                  f"{ti['try_number']}").get("content", [])
    return "\n".join(e.get("event", "") if isinstance(e, dict) else str(e) for e in content)


def test_connection_made_in_the_form(page, airflow_deployment: Deployment, say):
    """Admin -> Connections -> Add -> "ICR App", as the README says; Test from the list; switch the
    Key source from the pasted PEM to a key file in the edit dialog; Test again; run a sync with it;
    then every icr_report_* object answers without icr_reporting_refresh ever running.

    Airflow 3.3.2's edit dialog has no Test button (only Save): a connection edited there is
    tested from the list, which is what this test does after the edit.
    """
    from playwright.sync_api import expect

    dep = airflow_deployment
    steps = page.steps
    sim = dep.simulator
    pem = Path(sim["private_key_path"]).read_text()
    pem_fp = sim["fingerprints"][0]
    second = dep.simulator_add_key()  # a second app key, in a file the worker can read
    key_file = dep.home / "icr_second_key.pem"
    key_file.write_text(second["private_key_pem"])
    key_file.chmod(0o600)
    file_fp = second["fingerprint"]
    assert file_fp != pem_fp

    # The harness stored icr_default through the REST API: this test makes it in the form instead.
    assert dep.api("DELETE", "connections/icr_default").status_code == 204
    try:
        log_in(page, dep, page.steps)

        # 1. Add -> "ICR App": id, base URL, App ID, the PEM pasted; Key source left on Automatic.
        _connections_page(page, dep)
        page.get_by_role("button", name="Add Connection").click()
        form = page.get_by_role("dialog")
        form.get_by_label("Connection ID").fill("icr_default")
        form.get_by_role("combobox").click()
        form.get_by_role("combobox").fill("ICR")
        page.get_by_role("option", name="ICR App").click()
        form.get_by_label("API base URL").fill(sim["base_url"])
        form.get_by_label("App ID").fill(sim["app_id"])
        form.get_by_label("Private key (PEM)").fill(pem)  # a one-line input: newlines become spaces
        steps.shot("form-add-standard-fields")
        form.get_by_text("Extra Fields", exact=True).click()
        expect(form.locator("#element_key_source")).to_contain_text("Automatic")
        page.set_viewport_size({"width": 1400, "height": 2200})
        steps.shot("form-add-icr-default", full_page=True)
        form.get_by_role("button", name="Save").click()
        expect(form).to_be_hidden()
        row = page.get_by_role("row").filter(has_text="icr_default")
        expect(row).to_contain_text(sim["base_url"])
        stored = dep.api_json("GET", "connections/icr_default")
        assert stored["port"] is None and stored["password"] == "***"  # as the README's form saves it

        # 2. Test from the list: the UI posts port 0 and the mask, the hook tests the stored PEM.
        posted, message, toast = _test_from_list(page, pem_fp)
        assert posted["port"] == 0 and posted["password"] == "***", posted
        assert f"as ICR App {sim['app_id']}: {len(dep.simulator_truth_ids())} installations" in message
        assert f"{KEY_FROM_PEM}, fingerprint {pem_fp}" in message
        page.set_viewport_size({"width": 1400, "height": 1000})
        toast.scroll_into_view_if_needed()
        steps.shot("test-from-list-pem")

        # 3. Edit: Key source -> "Private key file", the second key's path, the PEM field cleared.
        row.get_by_role("button", name="Edit Connection").click()
        edit = page.get_by_role("dialog")
        pem_field = edit.get_by_label("Private key (PEM)")
        expect(pem_field).to_have_value("***")  # the form never gets the key back
        pem_field.fill("")
        edit.get_by_text("Extra Fields", exact=True).click()
        edit.locator("#element_key_source").click()
        page.get_by_role("option", name="Private key file").click()
        edit.locator("#element_private_key_path").fill(str(key_file))
        expect(edit.locator("#element_key_source")).to_contain_text("Private key file")
        page.set_viewport_size({"width": 1400, "height": 2200})
        steps.shot("edit-key-source-file", full_page=True)
        edit.get_by_role("button", name="Save").click()
        expect(edit).to_be_hidden()
        stored = dep.api_json("GET", "connections/icr_default")
        assert json.loads(stored["extra"])["key_source"] == "file"
        assert stored["password"] == "***"  # Airflow kept the PEM: the Key source is what switches

        # 4. Test from the list again: the file's key, by its path and fingerprint.
        page.set_viewport_size({"width": 1400, "height": 1000})
        _posted, message, toast = _test_from_list(page, file_fp)
        assert f"key: file {key_file}, fingerprint {file_fp}" in message
        assert pem_fp not in message and "BEGIN" not in message
        toast.scroll_into_view_if_needed()
        steps.shot("test-from-list-file")

        # 5. A sync with the connection as the form left it (REST: unpause, backfill one day; a
        # full resync, or the past date would reuse an earlier run's snapshot and not call ICR).
        steps.current = "sync-and-reports"  # names a failure screenshot of the steps below
        day = FORM_DAY.isoformat()
        dep.unpause()
        dep.api_json("POST", "backfills", json={
            "dag_id": DAG_ID, "from_date": f"{day}T00:00:00Z", "to_date": f"{day}T23:59:59Z",
            "reprocess_behavior": "none", "max_active_runs": 1, "dag_run_conf": {"full_resync": True}})
        runs = dep.wait_for_backfill(day, day, expected_runs=1)
        assert [r["state"] for r in runs] == ["success"], dep.explain_failed_runs(runs)
        run_id = runs[0]["dag_run_id"]
        log = _task_log(dep, run_id, "extract_installations")
        # Airflow masks extras named private_key* in task logs: the path shows as ***.
        assert "key: file " in log and f"fingerprint {file_fp}" in log, log[-3000:]
        assert "BEGIN" not in log and second["private_key_pem"].splitlines()[5] not in log

        # 6. Every reporting object answers, and icr_reporting_refresh never ran (issue 18 item 3).
        refresh = dep.api_json("GET", f"dags/{REFRESH_DAG_ID}")
        refresh_runs = dep.api_json("GET", f"dags/{REFRESH_DAG_ID}/dagRuns")["total_entries"]
        assert refresh["is_paused"] and refresh_runs == 0, (refresh["is_paused"], refresh_runs)
        reports = _report_objects(dep)
        say(f"\ne2e form connection: {message}")
        say(f"e2e reporting objects after the sync (icr_reporting_refresh paused, never run): {reports}")
        say("e2e form screenshots: " + ", ".join(p.name for p in steps.saved))
        assert reports and not [n for n, v in reports.items() if v.startswith("ERROR")], reports
    finally:
        dep.reset_icr_connection()  # the next e2e tests expect the harness's icr_default
