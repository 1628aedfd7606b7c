"""The Airflow plugin (entry point ``airflow.plugins``): the dashboard's app and its navigation entry."""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin
from icr.ui.app import URL_PREFIX, app


class ICRDashboardPlugin(AirflowPlugin):
    name = "icr_dashboard"
    fastapi_apps = [{"app": app, "url_prefix": URL_PREFIX, "name": "ICR installations dashboard"}]
    # A top-level entry of Airflow's navigation; the UI shows the page in its frame at
    # /plugin/icr-installations. href is relative to Airflow's base URL (no leading slash).
    external_views = [{
        "name": "ICR installations",
        "href": URL_PREFIX.lstrip("/") + "/",
        "url_route": "icr-installations",
        "destination": "nav",
        "nav_top_level": True,
        "icon": URL_PREFIX.lstrip("/") + "/static/icon.svg",
    }]
