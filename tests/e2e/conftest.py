"""Fixtures of the e2e tests: one real Airflow deployment per test session.

``airflow_deployment`` (session scope) starts the deployment of :mod:`tests.e2e.deployment`
the first time an ``e2e`` test asks for it, and stops every process, drops the databases and
flushes the Redis db at the end of the session, also when a test or the start-up failed. The
REST test, the browser test and the task-kill tests share it.

Without PostgreSQL or Redis the e2e tests skip with the reason, unless ``ICR_REQUIRE_E2E=1``
(CI), where they fail. ``ICR_E2E_DAGS_FOLDER`` points the deployment at another DAGs folder
(default: the repo's ``dags/``).

When an e2e test fails, the tail of every process's log is added to its report.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.deployment import ROOT, Deployment, DeploymentError, unavailable_services

_STATE: dict[str, Deployment] = {}

#: Debian's chromium, driven by Playwright for Python (no Playwright browser download).
CHROMIUM = Path(os.environ.get("ICR_E2E_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
#: The machine is shared (2 cores): Airflow's UI can take half a minute to render a page.
TIMEOUT_MS = 60_000


def _require_e2e() -> bool:
    return os.environ.get("ICR_REQUIRE_E2E", "") not in ("", "0", "false", "False")


@pytest.fixture(scope="session")
def airflow_deployment(request: pytest.FixtureRequest) -> Iterator[Deployment]:
    problems = unavailable_services()
    if problems:
        reason = "e2e deployment cannot start: " + "; ".join(problems)
        if _require_e2e():
            pytest.fail(reason + " (ICR_REQUIRE_E2E=1)", pytrace=False)
        pytest.skip(reason)
    dags_folder = Path(os.environ.get("ICR_E2E_DAGS_FOLDER") or ROOT / "dags").resolve()
    deployment = Deployment(dags_folder=dags_folder)
    _STATE["deployment"] = deployment
    request.addfinalizer(deployment.stop)  # before start(): a half-started deployment is stopped too
    try:
        deployment.start()
    except DeploymentError as exc:
        pytest.fail(f"the e2e Airflow deployment did not start: {exc}", pytrace=False)
    _say(request, f"e2e: Airflow at {deployment.base_url} (metadata db {deployment.metadata_db}, "
                  f"redis db {deployment.redis_db}, worker {deployment.worker_hostname}); "
                  f"ready in {deployment.timings['ready']:.0f}s; logs in {deployment.artifacts}")
    yield deployment


def _say(request: pytest.FixtureRequest, line: str) -> None:
    """Write a line to the terminal, whatever the capture mode."""
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    capman = request.config.pluginmanager.get_plugin("capturemanager")
    if reporter is None:
        print(line)
        return
    if capman is not None:
        with capman.global_and_fixture_disabled():
            reporter.write_line(line)
    else:
        reporter.write_line(line)


@pytest.fixture
def say(request: pytest.FixtureRequest):
    """say(line): print a result line to the terminal (shown with or without ``-s``)."""
    return lambda line: _say(request, line)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    report = yield
    setattr(item, f"rep_{report.when}", report)  # lets fixtures see how the test went
    deployment = _STATE.get("deployment")
    if report.failed and deployment is not None and item.get_closest_marker("e2e"):
        report.sections.append(("e2e process logs (tail)", deployment.procs.tails(lines=30)))
    return report


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The e2e tests run after every other test, so that the shared deployment (five Airflow
    processes that keep parsing and heartbeating while idle) never shares the 2 CPUs with the
    rest of the suite; first the e2e tests that start their own deployment (the guide), before
    the shared one is up. Modules that change the shared simulator's data
    (``CHANGES_SHARED_SIMULATOR = True``) run last: the others compare a day's snapshot with the
    simulator's truth."""
    items.sort(key=_run_order)  # stable: the collection order stays within each group


def _run_order(item: pytest.Item) -> int:
    if item.get_closest_marker("e2e") is None:
        return 0
    if getattr(getattr(item, "module", None), "CHANGES_SHARED_SIMULATOR", False):
        return 3
    return 2 if "airflow_deployment" in getattr(item, "fixturenames", ()) else 1


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Headless Debian Chromium; skips (or fails with ICR_REQUIRE_E2E=1) when it is missing."""
    problem = None
    if not CHROMIUM.exists():
        problem = f"{CHROMIUM} is missing (apt-get install -y chromium)"
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        problem = problem or "the playwright package is not installed (the [test] extra)"
    if problem:
        if _require_e2e():
            pytest.fail(problem + " (ICR_REQUIRE_E2E=1)", pytrace=False)
        pytest.skip(problem)
    from playwright.sync_api import expect

    expect.set_options(timeout=TIMEOUT_MS)
    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        try:
            yield chromium
        finally:
            chromium.close()
