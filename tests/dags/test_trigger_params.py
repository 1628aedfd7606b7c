"""Out-of-range trigger params are refused with the allowed range, never clamped (issue 18 item 6).

Airflow's trigger form passes a param's top-level ``minimum``/``maximum`` to its number widget,
which silently clamps on blur (0 became 1, 5000 became the maximum). The DAG keeps its ranges
one level down (``allOf``), where the widget does not look but Airflow validates every new run:
the REST API the form posts to, and ``airflow dags test``, refuse the value and name the range.
"""

from __future__ import annotations

import importlib.util
import json
from datetime import datetime, timezone
from pathlib import Path
from types import ModuleType

import pytest

from tests.dags.conftest import run_steps
from tests.support.airflow_home import airflow_env

DAG_FILE = Path(__file__).resolve().parents[2] / "dags" / "icr_installations_sync.py"
DAG_ID = "icr_installations_sync"
NUMERIC = ["page_size", "concurrency", "max_removal_share", "max_reject_share", "reuse_snapshot_max_age_hours"]


@pytest.fixture(scope="module")
def dag_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("icr_installations_sync_under_test", DAG_FILE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def params(dag_module):
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(DAG_FILE)).dags[DAG_ID].params


@pytest.mark.parametrize("name", NUMERIC)
def test_no_top_level_bounds_for_the_form_widget_to_clamp(params, name):
    schema = params.get_param(name).schema
    assert "minimum" not in schema and "maximum" not in schema, schema
    assert any("minimum" in sub for sub in schema.get("allOf", [])), f"{name} has no range at all: {schema}"


@pytest.mark.parametrize("value, words", [(0, ["page_size", "less than the minimum of 1"]),
                                          (101, ["page_size", "greater than the maximum of 100"]),
                                          (5000, ["page_size", "greater than the maximum of 100"])])
def test_out_of_range_page_size_fails_param_validation(params, value, words):
    from airflow.sdk.definitions.param import ParamsDict
    from airflow.sdk.exceptions import ParamValidationError

    checked = ParamsDict({k: params.get_param(k) for k in params})
    with pytest.raises(ParamValidationError) as info:
        checked["page_size"] = value  # ParamsDict validates on assignment
        checked.validate()
    for word in words:
        assert word in str(info.value)


def test_edges_of_the_range_are_accepted(params):
    from airflow.sdk.definitions.param import ParamsDict

    for value in (None, 1, 100):
        checked = ParamsDict({k: params.get_param(k) for k in params})
        checked["page_size"] = value
        assert checked.validate()["page_size"] == value


@pytest.mark.parametrize("name, value, range_text", [("page_size", 5000, "from 1 to 100"),
                                                     ("page_size", 0, "from 1 to 100"),
                                                     ("concurrency", 17, "from 1 to 16"),
                                                     ("max_reject_share", 1.5, "from 0 to 1"),
                                                     ("page_size", "many", "from 1 to 100")])
def test_a_run_started_anyway_fails_at_once_naming_param_and_range(dag_module, name, value, range_text):
    from icr.errors import ICRConfigError, is_permanent

    with pytest.raises(ICRConfigError) as info:
        dag_module.check_param_ranges({name: value})
    assert f"DAG param {name}" in str(info.value) and range_text in str(info.value), str(info.value)
    assert is_permanent(info.value)
    dag_module.check_param_ranges({name: None})  # "use the connection's value"


@pytest.mark.slow
def test_trigger_api_and_dags_test_refuse_out_of_range_page_size(airflow_home, tmp_path):
    env = airflow_env(airflow_home, AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS="True",
                      AIRFLOW_CONN_ICR_WAREHOUSE=json.dumps({"conn_type": "sqlite",
                                                             "host": str(tmp_path / "warehouse.sqlite")}))
    runs = f"/api/v2/dags/{DAG_ID}/dagRuns"
    trigger = [{"api": {"method": "POST", "path": runs, "json": {"logical_date": None, "conf": {"page_size": v}}}}
               for v in (0, 101, 5000, 100)]
    today = datetime.now(timezone.utc).date().isoformat()
    steps = [{"cli": ["dags", "reserialize"]}, *trigger, {"date": today, "conf": {"page_size": 5000}}]
    results, output = run_steps(airflow_home, steps, env)
    answers = [r for r in results if "api" in r]
    assert [a["status"] for a in answers] == [400, 400, 400, 200], answers
    for answer, words in zip(answers, (["page_size", "minimum of 1"], ["page_size", "maximum of 100"],
                                       ["page_size", "maximum of 100"])):
        detail = json.dumps(answer["body"])
        for word in words:
            assert word in detail, detail
    assert answers[3]["body"]["conf"] == {"page_size": 100}
    (refused,) = [r for r in results if r.get("date") == today]
    assert refused["state"].startswith("error: ParamValidationError"), refused
    assert "page_size" in refused["state"] and "maximum of 100" in refused["state"], refused
    assert refused["tis"] == []
