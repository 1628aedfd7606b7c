"""The "ICR installations" dashboard inside Airflow's UI (an Airflow 3 plugin).

``plugin.ICRDashboardPlugin`` (entry point ``airflow.plugins``) mounts the FastAPI app of
``app`` on the API server at ``/icr-dashboard`` and adds the page to Airflow's navigation as an
external view. The page and its data read only the ``icr_report_*`` views and ``icr_sync_runs``
of the ``icr_warehouse`` connection; every script and style is served from ``static/``.
"""
