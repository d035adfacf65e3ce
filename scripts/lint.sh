#!/usr/bin/env bash
# Static checks: ruff (lint and format), mypy on the package, actionlint on the workflow.
# Needs the .venv of scripts/setup.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy
.venv/bin/actionlint .github/workflows/*.yml
echo "lint: ruff, mypy and actionlint are clean"
