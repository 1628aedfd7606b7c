"""The event DAG with ``airflow dags test`` against the simulator: pending inbox events (an
install, an uninstall, a transaction event, an unknown event) are applied by one run; the
nightly sync DAG that follows agrees with them (no drift)."""

from __future__ import annotations

import json

import pytest
import sqlalchemy as sa

from icr.warehouse.engine import Warehouse
from icr.warehouse.migrations import apply_migrations
from tests.conftest import icr_conn_json
from tests.dags.conftest import airflow_env, run_steps
from tests.icr.webhooks.test_apply import deliver

pytestmark = pytest.mark.slow


def test_event_run_applies_the_inbox_and_the_nightly_agrees(make_simulator, airflow_home, tmp_path):
    sim = make_simulator(installations=20, seed=5)
    path = tmp_path / "warehouse.sqlite"
    wh = Warehouse.from_url(f"sqlite:///{path}")
    apply_migrations(wh)
    kept, gone = sim.truth_id_list()[:2]
    sim.remove_installations([gone])
    deliver(wh, "installed", {"id": kept})
    deliver(wh, "uninstalled", {"id": gone})
    deliver(wh, "warehouseTransaction", {"id": kept}, transaction={"id": "t1"})
    deliver(wh, "somethingNew", {"id": kept})
    env = airflow_env(airflow_home, AIRFLOW_CONN_ICR_DEFAULT=icr_conn_json(sim), ICR_SIM_URL=sim.base_url,
                      AIRFLOW_CONN_ICR_WAREHOUSE=json.dumps({"conn_type": "sqlite", "host": str(path)}),
                      ICR_EVENTS_QUIET_SECONDS="0")
    results, output = run_steps(airflow_home, [
        {"dag_id": "icr_installation_events", "date": "2026-11-30T10:00:00+00:00"},
        {"date": "2026-11-30"},
    ], env)
    assert [r["state"] for r in results] == ["success", "success"], output[-4000:]
    with wh.read() as conn:
        inbox = conn.execute(sa.text("SELECT event, status, applied_by FROM icr_webhook_inbox ORDER BY seq")).all()
        active = {r[0] for r in conn.execute(sa.text("SELECT installation_id FROM icr_report_active_installations"))}
        drift = conn.execute(sa.text("SELECT drift FROM icr_sync_runs")).scalar_one()
    assert [(e, s) for e, s, _ in inbox] == [("installed", "applied"), ("uninstalled", "applied"),
                                             ("warehouseTransaction", "stored"), ("somethingNew", "failed")]
    assert all(by and by.startswith("manual__") for _, _, by in inbox)
    assert kept in active and gone not in active and len(active) == 19
    assert drift == 0
    wh.dispose()
