"""Apply ICR webhook events within a minute of their delivery.

    receiver (python -m icr.webhooks) → inbox table → Redis pub/sub ``icr.installation_events``
    → AssetWatcher (MessageQueueTrigger, redis+pubsub, in the triggerer) → Asset event → this DAG

Each run applies **every** pending inbox event in arrival order, not only the one that woke it,
so a notification lost while Redis or the triggerer was down is caught by the next run; the
nightly ``icr_installations_sync`` applies pending events too, before it reads the full list.
What the events change: README, section "Webhooks". Connections: ``icr_default`` (confirms each
installation with ``GET /app/installations/{id}``), ``icr_warehouse``, ``redis_default``.
"""

from __future__ import annotations

import os
from datetime import datetime, timedelta, timezone
from typing import Any

from airflow.providers.common.messaging.triggers.msg_queue import MessageQueueTrigger
from airflow.sdk import Asset, AssetWatcher, dag, get_current_context, task

from icr.hooks import ICRHook
from icr.webhooks.apply import apply_until_quiet, confirm_with
from icr.webhooks.settings import ReceiverSettings
from icr.warehouse.engine import DEFAULT_CONN_ID as WAREHOUSE_CONN_ID
from icr.warehouse.engine import Warehouse
from icr.warehouse.migrations import apply_migrations

DAG_ID = "icr_installation_events"
ICR_CONN_ID = "icr_default"
_SETTINGS = ReceiverSettings.from_env()  # the channel and Redis connection the receiver publishes on
# How often the watcher (in the triggerer) asks Redis for a message. The provider's default, 60 s,
# would take most of the one-minute budget from delivery to dashboard.
POLL_SECONDS = float(os.environ.get("ICR_EVENTS_POLL_SECONDS", "1"))

#: One Asset event per notification the receiver publishes (the message itself is not used: the
#: run reads the inbox).
ICR_INSTALLATION_EVENTS_ASSET = Asset(
    name="icr_installation_events",
    uri="icr://webhooks/installation_events",
    watchers=[AssetWatcher(
        name="icr_installation_events_redis",
        trigger=MessageQueueTrigger(scheme="redis+pubsub", channels=[_SETTINGS.channel],
                                    redis_conn_id=_SETTINGS.redis_conn_id, poll_interval=POLL_SECONDS),
    )],
)


@dag(
    dag_id=DAG_ID,
    description="Apply ICR webhook events (installed, uninstalled, suspended, ...) to the warehouse",
    schedule=[ICR_INSTALLATION_EVENTS_ASSET],
    start_date=datetime(2024, 1, 1, tzinfo=timezone.utc),
    catchup=False,
    max_active_runs=1,  # runs apply the inbox in order; a notification during a run queues one more
    dagrun_timeout=timedelta(minutes=30),
    tags=["icr", "warehouse", "webhooks"],
    doc_md=__doc__,
    default_args={"owner": "data-platform", "retries": 2, "retry_delay": timedelta(seconds=20)},
)
def icr_installation_events() -> None:
    @task
    def apply_events() -> dict[str, Any]:
        """Apply every pending inbox event, and those that arrive until the inbox stays quiet;
        one bad event is marked 'failed', the rest go on."""
        warehouse = Warehouse.from_airflow(WAREHOUSE_CONN_ID)
        apply_migrations(warehouse)
        confirm = confirm_with(ICRHook(icr_conn_id=ICR_CONN_ID).get_conn())
        return apply_until_quiet(warehouse, confirm, get_current_context()["run_id"]).as_dict()

    apply_events()


icr_installation_events()
