"""Fast checks of docs/deploy-existing-airflow.md's markers (no Airflow started; runs with every pytest).

The e2e test (tests/e2e/test_guide.py) runs the guide; these catch, in seconds, an edit that would
leave a command unrun or a setting without a test value.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.e2e import guide


def test_every_bash_block_of_the_guide_is_marked():
    blocks = guide.blocks()
    assert not guide.problems(blocks), "\n".join(guide.problems(blocks))
    kinds = [b.kind for b in blocks]
    assert kinds.count("settings") == 1 and kinds.count("after-run") == 1
    assert [b.arg for b in blocks if b.kind == "start"] == [
        "api-server", "scheduler", "dag-processor", "triggerer", "celery-worker"]
    assert all(b.arg for b in blocks if b.kind == "skip"), "a skipped block says why"


def test_an_unmarked_block_an_unknown_marker_and_a_dangling_marker_are_reported(tmp_path: Path):
    doc = tmp_path / "guide.md"
    doc.write_text("```bash\necho unmarked\n```\n\n<!-- e2e: runn -->\n```bash\necho typo\n```\n"
                   "<!-- e2e: retry soon -->\n```bash\ntrue\n```\n```ini\n[Unit]\n```\n")
    found = guide.problems(guide.blocks(doc))
    assert len(found) == 3, found
    assert "without an <!-- e2e" in found[0] and "unknown marker 'e2e: runn'" in found[1] and "seconds" in found[2]
    doc.write_text("<!-- e2e: run -->\nsome text\n```bash\ntrue\n```\n")
    with pytest.raises(ValueError, match="not followed by a fenced block"):
        guide.blocks(doc)


def test_settings_substitution_needs_a_value_for_every_placeholder_and_no_other():
    [settings] = [b for b in guide.blocks() if b.kind == "settings"]
    documented = guide.settings(settings)
    placeholders = {k: f"/test/{k}" for k, v in documented.items() if "$" not in v}
    assert {"AIRFLOW_HOME", "AIRFLOW_DB_URL", "ICR_WAREHOUSE_URL", "ICR_APP_ID"} <= set(placeholders)
    text = guide.substitute_settings(settings, placeholders)
    assert "export AIRFLOW_HOME=/test/AIRFLOW_HOME" in text
    assert "/srv/airflow" not in text and "CHANGE_ME" not in text
    assert 'export AIRFLOW_API_URL="http://127.0.0.1:$AIRFLOW_API_PORT"' in text  # derived: as written
    with pytest.raises(ValueError, match="no value for the settings"):
        guide.substitute_settings(settings, {k: v for k, v in placeholders.items() if k != "ICR_APP_ID"})
    with pytest.raises(ValueError, match="have no"):
        guide.substitute_settings(settings, {**placeholders, "NOT_A_SETTING": "x"})
