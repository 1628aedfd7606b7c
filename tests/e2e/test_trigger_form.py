"""The trigger form refuses an out-of-range page size and says the allowed range (issue 18 item 6).

In Chromium against the real deployment: the DAG's Trigger dialog, "Page size" set to 5000 and
then 0. Before the fix Airflow's number widget clamped the value on blur (5000 became the
maximum, 0 became 1) and the run started with it. Now the field keeps what was typed and the
Trigger button gets Airflow's refusal naming the range; the REST API the form posts to refuses
it the same way, and no run is created.

Run alone: ``ICR_REQUIRE_E2E=1 pytest -m e2e -s tests/e2e/test_trigger_form.py``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest

from tests.e2e.conftest import TIMEOUT_MS
from tests.e2e.deployment import DAG_ID, Deployment
from tests.e2e.ui import log_in

pytestmark = [pytest.mark.e2e, pytest.mark.slow]



@pytest.fixture(scope="module")
def chromium_page(browser) -> Iterator[object]:
    context = browser.new_context(viewport={"width": 1400, "height": 1400})
    context.set_default_timeout(TIMEOUT_MS)
    try:
        yield context.new_page()
    finally:
        context.close()


def _shot(page, dep: Deployment, name: str) -> None:
    page.screenshot(path=str(dep.artifacts / "screenshots" / f"trigger-form-{name}.png"), full_page=True)


def _manual_runs(dep: Deployment) -> int:
    return dep.api_json("GET", f"dags/{DAG_ID}/dagRuns", params={"run_type": "manual"})["total_entries"]


def test_trigger_form_refuses_out_of_range_page_size(chromium_page, airflow_deployment: Deployment, say):
    from playwright.sync_api import expect

    page, dep = chromium_page, airflow_deployment
    runs_before = _manual_runs(dep)
    was_paused = dep.api_json("GET", f"dags/{DAG_ID}")["is_paused"]

    try:
        log_in(page, dep)

        for typed, refusal in (("5000", "greater than the maximum of 100"), ("0", "less than the minimum of 1")):
            page.goto(f"{dep.base_url}/dags/{DAG_ID}")  # a fresh Trigger dialog for each value
            expect(page.get_by_text(DAG_ID).first).to_be_visible()
            trigger = page.get_by_role("button", name="Trigger").first
            expect(trigger).to_be_enabled()
            trigger.click()
            dialog = page.get_by_role("dialog")
            expect(dialog.get_by_text("Page size", exact=True)).to_be_visible()
            expect(dialog.get_by_text(re.compile(r"from 1 to 100"))).to_be_visible()  # the range, before typing
            unpause = dialog.get_by_role("checkbox", name=re.compile("Unpause"))
            if unpause.count() and unpause.is_checked():  # leave the DAG as the other e2e tests expect it
                dialog.get_by_text(re.compile("^Unpause")).click()
                expect(unpause).not_to_be_checked()
            field = dialog.locator('input[name="element_page_size"]')
            field.fill(typed)
            field.press("Tab")  # the blur on which the old widget clamped
            expect(field).to_have_value(typed)
            _shot(page, dep, f"page-size-{typed}")
            dialog.get_by_test_id("trigger-dag-submit").click()
            expect(dialog.get_by_text(re.compile(f"page_size.*{refusal}|{refusal}")).first).to_be_visible()
            _shot(page, dep, f"refused-{typed}")
    except Exception:
        _shot(page, dep, "FAILED")
        raise
    finally:
        dep.api_json("PATCH", f"dags/{DAG_ID}", json={"is_paused": was_paused})

    # The REST API the form posts to refuses it too, and names the range.
    resp = dep.api("POST", f"dags/{DAG_ID}/dagRuns", json={"logical_date": None, "conf": {"page_size": 5000}})
    assert resp.status_code == 400, resp.text
    detail = resp.json()["detail"]
    assert "page_size" in detail and "maximum of 100" in detail and "'minimum': 1" in detail, detail
    assert _manual_runs(dep) == runs_before  # nothing was started with a clamped or refused value
    say(f"\ne2e trigger form: page_size 5000 and 0 kept as typed and refused; REST: {detail.splitlines()[0]}")
