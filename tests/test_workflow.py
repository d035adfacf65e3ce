"""The GitHub workflow: valid (actionlint), and running what .ci/run runs."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
WORKFLOW = REPO / ".github" / "workflows" / "ci.yml"


def steps(workflow: dict, job: str) -> list[str]:
    return [step["run"] for step in workflow["jobs"][job]["steps"] if "run" in step]


def test_actionlint_passes() -> None:
    actionlint = Path(sys.executable).parent / "actionlint"
    result = subprocess.run(
        [str(actionlint), str(WORKFLOW)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_workflow_runs_the_ci_commands() -> None:
    workflow = yaml.safe_load(WORKFLOW.read_text())
    assert workflow["concurrency"]["cancel-in-progress"] is True
    for job in workflow["jobs"].values():
        setup = [s for s in job["steps"] if s.get("uses", "").startswith("actions/setup-python")]
        assert setup and setup[0]["with"]["cache"] == "pip"
        assert "bash scripts/setup.sh" in [s.get("run") for s in job["steps"]]
    assert "bash scripts/lint.sh" in steps(workflow, "lint")
    assert ".venv/bin/python -m pytest" in steps(workflow, "test")
    assert ".venv/bin/python -m pytest -m slow" in steps(workflow, "slow")

    # .ci/run = scripts/test.sh (set-up, lint, pytest) + the slow tests: the same commands.
    ci_run = (REPO / ".ci" / "run").read_text()
    test_sh = (REPO / "scripts" / "test.sh").read_text()
    assert "bash scripts/test.sh" in ci_run and "pytest -m slow" in ci_run
    assert "bash scripts/setup.sh" in test_sh and "bash scripts/lint.sh" in test_sh
    lint_sh = (REPO / "scripts" / "lint.sh").read_text()
    for tool in ("ruff check", "ruff format --check", "mypy", "actionlint"):
        assert tool in lint_sh


def test_python_versions_match_the_package() -> None:
    workflow = yaml.safe_load(WORKFLOW.read_text())
    versions = workflow["jobs"]["test"]["strategy"]["matrix"]["python-version"]
    pyproject = (REPO / "pyproject.toml").read_text()  # no tomllib on Python 3.10
    assert f'requires-python = ">={versions[0]}"' in pyproject
    classifiers = re.findall(r'"Programming Language :: Python :: (3\.\d+)"', pyproject)
    assert set(classifiers) == set(versions)
