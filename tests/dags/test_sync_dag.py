"""The real DAG end to end with ``airflow dags test``, against the simulator, on both warehouses:
a nightly run, a 3-day backfill that reuses that snapshot, a rerun of one day, a run that fails
half-way (a mass removal) leaving the warehouse untouched, and the reporting refresh DAG."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest
import sqlalchemy as sa

from icr.warehouse.engine import Warehouse
from tests.conftest import icr_conn_json
from tests.dags.conftest import run_steps
from tests.support.airflow_home import airflow_env

pytestmark = pytest.mark.slow


@pytest.fixture(params=["sqlite", "postgresql"])
def warehouse_conn(request, tmp_path):
    """(AIRFLOW_CONN_ICR_WAREHOUSE JSON, Warehouse) for each dialect."""
    if request.param == "sqlite":
        path = tmp_path / "warehouse.sqlite"
        conn = {"conn_type": "sqlite", "host": str(path)}
        url = f"sqlite:///{path}"
    else:
        url = request.getfixturevalue("pg_database")
        db = url.rsplit("/", 1)[1]
        conn = {"conn_type": "postgres", "host": "127.0.0.1", "port": 5432, "login": "postgres", "schema": db}
    wh = Warehouse.from_url(url)
    yield json.dumps(conn), wh
    wh.dispose()


def test_nightly_backfill_rerun_and_failed_run(make_simulator, airflow_home, warehouse_conn):
    conn_json, wh = warehouse_conn
    sim = make_simulator(installations=300, seed=11)
    created = [datetime.fromisoformat(r["createdAt"].replace("Z", "+00:00")).date() for r in sim.truth()]
    today = datetime.now(timezone.utc).date()
    days = [(today - timedelta(days=n)).isoformat() for n in (3, 2, 1)]
    env = airflow_env(airflow_home, AIRFLOW_CONN_ICR_DEFAULT=icr_conn_json(sim),
                      AIRFLOW_CONN_ICR_WAREHOUSE=conn_json, ICR_SIM_URL=sim.base_url)
    steps = [
        {"date": today.isoformat()},                       # the nightly run: reads the API
        *({"date": d} for d in days),                      # a 3-day backfill: reuses that snapshot
        {"fingerprint": "before rerun", "ignore_run_ids": True},
        {"date": days[1]},                                 # rerun one day
        {"fingerprint": "after rerun", "ignore_run_ids": True},
        {"sim_changes": {"remove": 200}},                  # ICR suddenly lists a third
        {"fingerprint": "before failed run"},
        {"date": today.isoformat()},                       # fails in load: mass removal
        {"fingerprint": "after failed run"},
        {"dag_id": "icr_reporting_refresh", "date": today.isoformat()},
    ]
    results, output = run_steps(airflow_home, steps, env)
    states = [(r.get("date"), r["state"]) for r in results if "state" in r]
    assert states == [(today.isoformat(), "success"), *((d, "success") for d in days), (days[1], "success"),
                      (today.isoformat(), "failed"), (today.isoformat(), "success")], output[-4000:]
    prints = {r["fingerprint"]: r["hash"] for r in results if "fingerprint" in r}
    assert prints["before rerun"] == prints["after rerun"]  # rerunning a day gives the same result
    assert prints["before failed run"] == prints["after failed run"]  # the failed run changed nothing

    with wh.read() as conn:
        runs = conn.execute(sa.text(
            "SELECT snapshot_date, status, snapshot_source, records_fetched, inserted, daily_rows, error "
            "FROM icr_sync_runs ORDER BY started_at")).mappings().all()
        daily = dict(conn.execute(sa.text(
            "SELECT snapshot_date, count(*) FROM icr_installation_daily GROUP BY snapshot_date")).all())
        active = conn.execute(sa.text("SELECT count(*) FROM icr_installations WHERE deleted_at IS NULL")).scalar_one()
        summary = conn.execute(sa.text("SELECT count(*) FROM icr_report_dashboard_summary")).scalar_one()
    assert [r["status"] for r in runs] == ["success"] * 5 + ["failed"]
    assert [r["snapshot_source"] for r in runs[:5]] == ["api", "reused", "reused", "reused", "reused"]
    assert runs[0]["records_fetched"] == runs[0]["inserted"] == 300
    assert "accept_mass_removal" in runs[5]["error"]
    # The API was read by the nightly run and by the failed run only, never by the backfill.
    assert sim.stats["by_kind"]["list"] == 3 + 1
    daily = {str(k)[:10]: v for k, v in daily.items()}
    assert daily == {today.isoformat(): 300,
                     **{d: sum(1 for c in created if c.isoformat() <= d) for d in days}}
    assert active == 300
    assert summary == 4  # the refresh DAG materialized one row per snapshot date
