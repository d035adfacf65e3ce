#!/usr/bin/env bash
# Static checks: ruff (lint and format), mypy on the package, the import contracts (the wings
# import one way: pyproject.toml's [tool.importlinter]), actionlint on the workflow.
# Needs the .venv of scripts/setup.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy
.venv/bin/lint-imports --no-cache
.venv/bin/actionlint .github/workflows/*.yml
echo "lint: ruff, mypy, import contracts and actionlint are clean"
