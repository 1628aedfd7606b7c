"""The Airflow Asset the sync publishes: downstream DAGs (BI refreshes) schedule on it."""

from __future__ import annotations

from airflow.sdk import Asset

ICR_INSTALLATIONS_ASSET = Asset(name="icr_installations", uri="icr://warehouse/icr_installations")
