"""The dashboard's FastAPI app: the page, its static files and one data endpoint per chart.

Airflow does not protect a plugin's endpoints: every route here depends on :func:`viewer`,
which authenticates with Airflow's own ``get_user`` (the ``Authorization: Bearer`` JWT or the UI
session's ``_token`` cookie, validated by the auth manager) and then asks the auth manager
whether that user may read the DAG ``icr_installations_sync``.
"""

from __future__ import annotations

import csv
import io
import logging
from datetime import date, timedelta
from importlib import resources
from typing import Annotated, Any, Literal

from fastapi import Depends, FastAPI, HTTPException, Query, Request, status
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials
from sqlalchemy.exc import SQLAlchemyError

from airflow.api_fastapi.app import get_auth_manager
from airflow.api_fastapi.auth.managers.models.base_user import BaseUser
from airflow.api_fastapi.auth.managers.models.resource_details import DagDetails
from airflow.api_fastapi.core_api.security import bearer_scheme, get_user
from icr.errors import ICRConfigError
from icr.warehouse.engine import DEFAULT_CONN_ID, Warehouse
from icr.warehouse.reporting import CHARTS, chart_table, snapshot_range

log = logging.getLogger(__name__)

URL_PREFIX = "/icr-dashboard"
SYNC_DAG_ID = "icr_installations_sync"
DEFAULT_DAYS = 90
# The files the page loads, by name (nothing else under static/ is served).
STATIC_FILES = {
    "dashboard.js": "text/javascript; charset=utf-8",
    "dashboard.css": "text/css; charset=utf-8",
    "icon.svg": "image/svg+xml",
    "vendor/chart.umd.min.js": "text/javascript; charset=utf-8",
    "vendor/chart.js-LICENSE.md": "text/plain; charset=utf-8",
}
_NO_STORE = {"Cache-Control": "no-store"}


async def viewer(
    request: Request,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)],
) -> BaseUser:
    """The Airflow user of this request, or 401 (no, expired or invalid credentials) / 403.

    Airflow's ``get_user`` answers an invalid (forged, wrongly signed) token with 403; for this
    page any request without a valid session or token is unauthenticated: 401.
    """
    try:
        user = await get_user(request, _oauth_token=None, bearer_credentials=bearer)
    except HTTPException as exc:
        if exc.status_code in (status.HTTP_401_UNAUTHORIZED, status.HTTP_403_FORBIDDEN):
            raise HTTPException(status.HTTP_401_UNAUTHORIZED, "Not authenticated: log in to Airflow",
                                headers={"WWW-Authenticate": "Bearer"}) from None
        raise
    if not get_auth_manager().is_authorized_dag(method="GET", details=DagDetails(id=SYNC_DAG_ID), user=user):
        raise HTTPException(status.HTTP_403_FORBIDDEN, f"Forbidden: needs read access to the DAG {SYNC_DAG_ID}")
    return user


Viewer = Annotated[BaseUser, Depends(viewer)]

app = FastAPI(title="ICR installations dashboard", docs_url=None, redoc_url=None, openapi_url=None,
              dependencies=[Depends(viewer)])


def _static(name: str) -> bytes:
    return resources.files("icr.ui").joinpath("static", name).read_bytes()


@app.get("/", response_class=HTMLResponse)
def page() -> HTMLResponse:
    return HTMLResponse(_static("index.html"), headers=_NO_STORE)


@app.get("/static/{name:path}")
def static(name: str) -> Response:
    if name not in STATIC_FILES:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no static file {name!r}")
    return Response(_static(name), media_type=STATIC_FILES[name], headers={"Cache-Control": "max-age=300"})


def _warehouse() -> Any:
    """The icr_warehouse connection's warehouse for one request (disposed afterwards)."""
    try:
        warehouse = Warehouse.from_airflow(DEFAULT_CONN_ID)
    except ICRConfigError as exc:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, f"The {DEFAULT_CONN_ID} connection: {exc}") from None
    try:
        yield warehouse
    finally:
        warehouse.dispose()


WarehouseDep = Annotated[Warehouse, Depends(_warehouse)]


def _unavailable(warehouse: Warehouse, exc: SQLAlchemyError) -> HTTPException:
    # The driver's first line says what is missing (e.g. no such table before the first sync);
    # the connection's description carries no password.
    said = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0][:300]
    log.warning("ICR dashboard: the warehouse %s did not answer: %s", warehouse.description, said)
    return HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE,
                         f"The warehouse {warehouse.description} did not answer ({said}). Has "
                         f"{SYNC_DAG_ID} run successfully against the {DEFAULT_CONN_ID} connection?")


@app.get("/api/range")
def date_range(warehouse: WarehouseDep) -> JSONResponse:
    """The snapshot dates the warehouse holds, and the range the page shows first."""
    try:
        found = snapshot_range(warehouse)
    except SQLAlchemyError as exc:
        raise _unavailable(warehouse, exc) from None
    body: dict[str, Any] = {"warehouse": warehouse.description, "charts": {k: v[1] for k, v in CHARTS.items()}}
    if found is None:
        body.update(first=None, last=None, start=None, end=None)
    else:
        first, last = found
        body.update(first=first.isoformat(), last=last.isoformat(),
                    start=max(first, last - timedelta(days=DEFAULT_DAYS - 1)).isoformat(), end=last.isoformat())
    return JSONResponse(body, headers=_NO_STORE)


@app.get("/api/data/{chart}")
def chart_data(
    chart: str,
    warehouse: WarehouseDep,
    start: Annotated[date, Query(description="first snapshot date (YYYY-MM-DD)")],
    end: Annotated[date, Query(description="last snapshot date (YYYY-MM-DD)")],
    format: Annotated[Literal["json", "csv"], Query()] = "json",  # noqa: A002 - the query parameter's name
) -> Response:
    """One chart's rows for snapshot dates start..end, as JSON or as a CSV download."""
    if chart not in CHARTS:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no chart {chart!r}; the charts are {', '.join(CHARTS)}")
    if end < start:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_ENTITY, f"end {end} is before start {start}")
    try:
        table = chart_table(warehouse, chart, start, end)
    except SQLAlchemyError as exc:
        raise _unavailable(warehouse, exc) from None
    if format == "csv":
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(table.columns)
        writer.writerows(table.rows)
        name = f"icr_{chart}.csv" if chart == "runs" else f"icr_{chart}_{start}_{end}.csv"
        return Response(out.getvalue(), media_type="text/csv; charset=utf-8",
                        headers={"Content-Disposition": f'attachment; filename="{name}"', **_NO_STORE})
    return JSONResponse({"chart": chart, "start": start.isoformat(), "end": end.isoformat(),
                         "columns": table.columns, "rows": table.rows}, headers=_NO_STORE)
