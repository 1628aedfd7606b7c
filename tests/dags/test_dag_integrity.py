"""DAG integrity (as in Astronomer's project template): the DAGs import cleanly and carry owner,
tags and retries; the sync DAG has the schedule, params and task graph users rely on."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

DAGS = Path(__file__).resolve().parents[2] / "dags"


@pytest.fixture(scope="module")
def dagbag():
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(DAGS))


def test_no_import_errors(dagbag):
    assert dagbag.import_errors == {}
    assert set(dagbag.dag_ids) == {"icr_installations_sync", "icr_reporting_refresh", "icr_installation_events"}


@pytest.mark.parametrize("dag_id", ["icr_installations_sync", "icr_reporting_refresh", "icr_installation_events"])
def test_owner_tags_retries(dagbag, dag_id):
    dag = dagbag.dags[dag_id]
    assert dag.tags and "icr" in dag.tags
    for task in dag.tasks:
        assert task.owner not in ("", "airflow"), task.task_id
        assert task.retries >= 1, task.task_id


def test_sync_dag_shape(dagbag):
    dag = dagbag.dags["icr_installations_sync"]
    assert dag.catchup is False and dag.max_active_runs == 1 and dag.dagrun_timeout is not None
    assert type(dag.timetable).__name__ == "CronTriggerTimetable"
    assert dag.timetable.summary == os.environ.get("ICR_SYNC_SCHEDULE", "0 2 * * *")
    assert {"full_resync", "accept_mass_removal", "page_size", "reuse_snapshot_max_age_hours"} <= set(dag.params)
    order = ["migrate_warehouse", "apply_webhook_events", "extract_installations", "load_warehouse", "verify_load", "publish"]
    for upstream, downstream in zip(order, order[1:]):
        assert downstream in dag.get_task(upstream).downstream_task_ids
    assert [o.name for o in dag.get_task("publish").outlets] == ["icr_installations"]
    refresh = dagbag.dags["icr_reporting_refresh"]
    assert type(refresh.timetable).__name__ == "AssetTriggeredTimetable"
    assert "icr_installations" in repr(refresh.timetable.asset_condition)


def test_sync_dag_retry_settings(dagbag, monkeypatch):
    """Retries back off exponentially from ICR_SYNC_RETRY_DELAY_SECONDS (default 2 minutes)."""
    from datetime import timedelta

    from airflow.dag_processing.dagbag import DagBag
    from airflow.serialization.serialized_objects import DagSerialization

    default = timedelta(seconds=float(os.environ.get("ICR_SYNC_RETRY_DELAY_SECONDS", "120")))
    # As the scheduler sees the DAG: Airflow 3.3 reads retry_exponential_backoff as a multiplier
    # (1.0 would mean no backoff); the DAG's True must arrive as "double each time".
    scheduled = DagSerialization.from_dict(DagSerialization.to_dict(dagbag.dags["icr_installations_sync"]))
    for task in scheduled.tasks:
        assert (task.retry_delay, task.retry_exponential_backoff) == (default, 2.0), task.task_id
        assert task.max_retry_delay == timedelta(minutes=20), task.task_id
    monkeypatch.setenv("ICR_SYNC_RETRY_DELAY_SECONDS", "7.5")
    monkeypatch.setenv("ICR_SYNC_RETRIES", "4")
    tuned = DagBag(dag_folder=str(DAGS / "icr_installations_sync.py")).dags["icr_installations_sync"]
    assert {(t.retry_delay, t.retries) for t in tuned.tasks} == {(timedelta(seconds=7.5), 4)}


def test_events_dag_is_scheduled_by_a_redis_pubsub_asset_watcher(dagbag):
    """icr_installation_events runs on the Asset whose AssetWatcher listens on Redis pub/sub
    channel icr.installation_events (redis_default), polling every second, one run at a time."""
    from airflow.serialization.serialized_objects import DagSerialization

    dag = dagbag.dags["icr_installation_events"]
    assert dag.max_active_runs == 1 and dag.catchup is False
    assert [t.task_id for t in dag.tasks] == ["apply_events"]
    assert type(dag.timetable).__name__ == "AssetTriggeredTimetable"
    (asset,) = dag.timetable.asset_condition.objects
    assert asset.uri == "icr://webhooks/installation_events"
    (watcher,) = asset.watchers
    classpath, kwargs = watcher.trigger.serialize()
    assert classpath == "airflow.providers.redis.triggers.redis_await_message.AwaitMessageTrigger"
    assert kwargs == {"channels": ["icr.installation_events"], "redis_conn_id": "redis_default", "poll_interval": 1.0}
    # and as the scheduler stores it
    assert DagSerialization.to_dict(dag)["dag"]["timetable"]
