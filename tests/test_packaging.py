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
BUILD_CONTEXT = ("pyproject.toml", "constraints.txt", "README.md", "plugins", "sql", "dags")
_IGNORED = shutil.ignore_patterns("*.egg-info", "__pycache__", "*.pyc", "*.pem", "*.key")


def copy_build_context(dest: Path) -> Path:
    """A clean copy of what the wheel is built from (the guide's e2e test installs from one too)."""
    dest.mkdir(parents=True, exist_ok=True)
    for name in BUILD_CONTEXT:
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, dest / name, ignore=_IGNORED)
        else:
            shutil.copy2(ROOT / name, dest / name)
    return dest


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    src = copy_build_context(tmp_path_factory.mktemp("context"))
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
from icr.warehouse import migrations, statements
out = {"icr_file": icr.__file__}
for dialect in ("postgresql", "sqlite"):
    out[dialect] = [m.version + "_" + m.name for m in migrations.available(dialect)]
out["merge"] = {name: sorted(statements.queries(name)) for name in sys.argv[1:]}
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


def test_dockerfile_copies_the_build_context_before_installing():
    """The image's ``pip install .`` sees exactly BUILD_CONTEXT (what this module builds from)."""
    text = (ROOT / "Dockerfile").read_text()
    install = text.index('pip install --no-cache-dir -c constraints.txt ".[celery]"')
    copied = set()
    for line in text[:install].splitlines():
        if line.startswith("COPY "):
            copied.update(p.rstrip("/") for p in line.split()[2:-1])
    assert copied == set(BUILD_CONTEXT), f"Dockerfile copies {sorted(copied)} before pip install"


def test_wheel_ships_the_dag_files_as_icr_dags(wheel: Path) -> None:
    """An Airflow that installs the wheel gets the DAGs from it, byte for byte those of dags/."""
    archive = zipfile.ZipFile(wheel)
    repo_dags = sorted((ROOT / "dags").glob("*.py"))
    assert repo_dags, "no DAG files in dags/"
    for path in repo_dags:
        name = f"icr/dags/{path.name}"
        assert name in archive.namelist(), f"{name} missing from the wheel"
        assert archive.read(name) == path.read_bytes(), f"{name} differs from dags/{path.name}"


_DAGBAG_PROBE = """
import json, sys
from airflow.dag_processing.dagbag import DagBag
out = []
for _ in range(2):  # a second parse in the same process (a long-lived parser) finds them again
    bag = DagBag(dag_folder=sys.argv[1])
    out.append({"errors": {k: str(v)[-2000:] for k, v in bag.import_errors.items()},
                "dags": {d: bag.dags[d].fileloc for d in sorted(bag.dags)}})
import icr.dags.icr_installations_sync as m
out.append(m.__file__)
print(json.dumps(out))
"""


def test_the_guides_dag_loader_finds_both_dags_in_the_installed_copy(wheel: Path, tmp_path: Path) -> None:
    """docs/deploy-existing-airflow.md's loader file, written by the guide's own block, in a DAGs
    folder of its own, with the unpacked wheel as the only copy of the package."""
    from tests.e2e import guide

    writers = [b for b in guide.blocks() if b.kind == "run" and "dags/icr_dags.py" in b.text]
    assert len(writers) == 1, f"expected one guide block that writes the loader, found {len(writers)}"
    home = tmp_path / "airflow_home"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "PYTHONPATH"))}
    subprocess.run(["bash", "-euo", "pipefail", "-c", writers[0].text], env={**env, "AIRFLOW_HOME": str(home)},
                   check=True, timeout=60)
    loader = home / "dags" / "icr_dags.py"
    assert loader.is_file(), f"the guide's block did not write {loader}"

    unpacked = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(unpacked)
    env.update(PYTHONPATH=str(unpacked), AIRFLOW_HOME=str(home), AIRFLOW__CORE__LOAD_EXAMPLES="False",
               AIRFLOW__CORE__UNIT_TEST_MODE="False")
    proc = subprocess.run([sys.executable, "-c", _DAGBAG_PROBE, str(loader.parent)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    *parses, module_file = json.loads(proc.stdout.strip().splitlines()[-1])
    for parse in parses:
        assert not parse["errors"], parse["errors"]
        assert parse["dags"] == {"icr_installations_sync": str(loader), "icr_reporting_refresh": str(loader)}
    assert Path(module_file).resolve().is_relative_to(unpacked.resolve()), module_file
