"""The event DAG with ``airflow dags test`` against the simulator: pending inbox events (an
install, an uninstall, a transaction event, an unknown event) are applied by one run; an event
whose notification was lost is applied by the nightly sync DAG first, which then agrees with
the events (no drift)."""

from __future__ import annotations

import json

import pytest
import sqlalchemy as sa

from icr.warehouse.engine import Warehouse
from icr.warehouse.migrations import apply_migrations
from tests.conftest import icr_conn_json
from tests.dags.conftest import run_steps
from tests.support.airflow_home import airflow_env
from tests.icr.webhooks.test_apply import deliver

pytestmark = pytest.mark.slow


def test_event_run_applies_the_inbox_and_the_nightly_agrees(make_simulator, airflow_home, tmp_path):
    sim = make_simulator(installations=20, seed=5)
    path = tmp_path / "warehouse.sqlite"
    wh = Warehouse.from_url(f"sqlite:///{path}")
    apply_migrations(wh)
    kept, gone, late = sim.truth_id_list()[:3]
    sim.remove_installations([gone])
    deliver(wh, "installed", {"id": kept})
    deliver(wh, "installed", {"id": late})
    deliver(wh, "uninstalled", {"id": gone})
    deliver(wh, "warehouseTransaction", {"id": kept}, transaction={"id": "t1"})
    deliver(wh, "somethingNew", {"id": kept})
    env = airflow_env(airflow_home, AIRFLOW_CONN_ICR_DEFAULT=icr_conn_json(sim), ICR_SIM_URL=sim.base_url,
                      AIRFLOW_CONN_ICR_WAREHOUSE=json.dumps({"conn_type": "sqlite", "host": str(path)}),
                      ICR_EVENTS_QUIET_SECONDS="0")
    results, output = run_steps(airflow_home, [
        {"dag_id": "icr_installation_events", "date": "2026-11-30T10:00:00+00:00"},
        # An uninstall whose notification was lost: the nightly run applies it before its extract.
        {"sim_changes": {"remove": [late]}},
        {"inbox": {"event": "uninstalled", "installation": {"id": late}}},
        {"date": "2026-11-30"},
    ], env)
    assert [r["state"] for r in results if "state" in r] == ["success", "success"], output[-4000:]
    with wh.read() as conn:
        inbox = conn.execute(sa.text("SELECT event, status, applied_by FROM icr_webhook_inbox ORDER BY seq")).all()
        active = {r[0] for r in conn.execute(sa.text("SELECT installation_id FROM icr_report_active_installations"))}
        drift = conn.execute(sa.text("SELECT drift FROM icr_sync_runs")).scalar_one()
    assert [(e, s) for e, s, _ in inbox] == [("installed", "applied"), ("installed", "applied"),
                                             ("uninstalled", "applied"), ("warehouseTransaction", "stored"),
                                             ("somethingNew", "failed"), ("uninstalled", "applied")]
    assert all(by.startswith("manual__") and not by.endswith(":webhook_events") for _, _, by in inbox[:5])
    assert inbox[5][2].endswith(":webhook_events")  # applied by the nightly run's first task
    with wh.read() as conn:
        reason = conn.execute(sa.text("SELECT removal_reason FROM icr_installation_state "
                                      "WHERE installation_id = :i"), {"i": late}).scalar_one()
    assert reason == "uninstalled"  # kept by the nightly list, which no longer has it
    assert kept in active and gone not in active and late not in active and len(active) == 18
    assert drift == 0
    wh.dispose()
