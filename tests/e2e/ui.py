"""The browser side of the e2e tests: numbered screenshots, and logging in to Airflow's UI."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from tests.e2e.deployment import ADMIN_USER, Deployment


class Screenshots:
    """Numbered screenshots of a browser session: ``<prefix><NN>-<name>.png`` in ``directory``."""

    def __init__(self, page: Any, directory: Path, prefix: str = "") -> None:
        self.page = page
        self.directory = directory
        self.prefix = prefix
        self.n = 0
        self.current = "start"  # names a screenshot taken when the test fails
        self.saved: list[Path] = []

    def shot(self, name: str, full_page: bool = False) -> Path:
        self.n += 1
        self.current = name
        path = self.directory / f"{self.prefix}{self.n:02d}-{name}.png"
        self.page.screenshot(path=str(path), full_page=full_page)
        self.saved.append(path)
        return path


def log_in(page: Any, dep: Deployment, shots: Screenshots | None = None) -> None:
    """Log in as the admin on the login form, and wait for the home page of a logged-in user."""
    page.goto(f"{dep.base_url}/")
    page.wait_for_url(re.compile(r".*/auth/login.*"))
    page.get_by_label("Username").fill(ADMIN_USER)
    page.get_by_label("Password").fill(dep.password)
    if shots is not None:
        shots.shot("login")
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"{dep.base_url}/")
    page.get_by_role("button", name="Admin").wait_for()  # the navigation of a logged-in user
    page.wait_for_load_state("networkidle")
    if shots is not None:
        shots.shot("logged-in-home")
