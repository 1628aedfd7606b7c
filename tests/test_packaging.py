"""The built wheel carries everything an installed copy needs (the Docker image installs one).

The suite itself runs against an editable install, where ``icr.sql`` resolves to the repo's
``sql/`` folder; a non-editable install only has what ``pyproject.toml`` puts in the wheel. A SQL
file missing from the package data would only show up as a failed migration in production, so
this builds the wheel, checks its contents against the repo, and loads the migrations and merge
SQL from the unpacked wheel in a separate interpreter.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow


# What the Dockerfile copies into the image before ``pip install .`` (.dockerignore drops the rest,
# notably a local *.egg-info whose SOURCES.txt would otherwise smuggle files into the build).
_BUILD_CONTEXT = ("pyproject.toml", "constraints.txt", "README.md", "plugins", "sql")
_IGNORED = shutil.ignore_patterns("*.egg-info", "__pycache__", "*.pyc", "*.pem", "*.key")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    src = tmp_path_factory.mktemp("context")
    for name in _BUILD_CONTEXT:
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, src / name, ignore=_IGNORED)
        else:
            shutil.copy2(ROOT / name, src / name)
    out = tmp_path_factory.mktemp("wheel")
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--wheel-dir", str(out), str(src)],
        capture_output=True, text=True, timeout=300,
    )
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"building the wheel failed:\n{log[-4000:]}"
    # setuptools warns before it starts leaving such folders out: fix pyproject.toml, not the test.
    assert "would be ignored" not in log, f"setuptools would drop part of the package:\n{log[-4000:]}"
    wheels = list(out.glob("icr_installations_sync-*.whl"))
    assert len(wheels) == 1, f"expected one wheel in {out}, found {sorted(p.name for p in out.iterdir())}"
    return wheels[0]


def test_wheel_holds_every_sql_file_the_provider_entry_point_and_no_tests(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    repo_sql = {f"icr/sql/{p.relative_to(ROOT / 'sql').as_posix()}" for p in (ROOT / "sql").rglob("*.sql")}
    assert repo_sql, "no SQL files found under sql/"
    missing = sorted(repo_sql - names)
    assert not missing, f"SQL files of sql/ missing from the wheel: {missing}"
    assert "icr/py.typed" in names
    assert {"icr/hooks.py", "icr/warehouse/merge.py", "icr/warehouse/migrations.py"} <= names
    entry_points = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
    text = zipfile.ZipFile(wheel).read(entry_points).decode()
    assert "[apache_airflow_provider]" in text and "icr.provider:get_provider_info" in text
    assert "[airflow.plugins]" in text and "icr.ui.plugin:ICRDashboardPlugin" in text
    repo_static = {f"icr/ui/{p.relative_to(ROOT / 'plugins' / 'icr' / 'ui').as_posix()}"
                   for p in (ROOT / "plugins" / "icr" / "ui" / "static").rglob("*") if p.is_file()}
    assert "icr/ui/static/vendor/chart.umd.min.js" in repo_static
    missing_static = sorted(repo_static - names)
    assert not missing_static, f"the dashboard's static files missing from the wheel: {missing_static}"
    leaked = sorted(n for n in names if n.startswith(("tests/", "dags/", "benchmarks/")) or n.endswith(".pem"))
    assert not leaked, f"the wheel must not ship these: {leaked}"


_PROBE = """
import json, sys
import icr
from icr.warehouse import merge, migrations
out = {"icr_file": icr.__file__}
for dialect in ("postgresql", "sqlite"):
    out[dialect] = [m.version + "_" + m.name for m in migrations.available(dialect)]
out["merge"] = {name: sorted(merge.queries(name)) for name in sys.argv[1:]}
print(json.dumps(out))
"""


def test_installed_copy_finds_its_migrations_and_merge_sql(wheel: Path, tmp_path: Path) -> None:
    unpacked = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(unpacked)
    merge_files = sorted(p.stem for p in (ROOT / "sql" / "merge").glob("*.sql"))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PYTHONPATH"] = str(unpacked)  # ahead of the editable install's path hooks
    proc = subprocess.run([sys.executable, "-c", _PROBE, *merge_files], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    found = json.loads(proc.stdout.strip().splitlines()[-1])
    assert Path(found["icr_file"]).resolve().is_relative_to(unpacked.resolve()), found["icr_file"]
    for dialect in ("postgresql", "sqlite"):
        expected = sorted(p.stem for folder in ("common", dialect)
                          for p in (ROOT / "sql" / "migrations" / folder).glob("*.sql"))
        assert found[dialect] == expected, dialect
    for name in merge_files:
        assert found["merge"][name], f"sql/merge/{name}.sql has no named statements in the installed copy"
