#!/usr/bin/env bash
# Set up (scripts/setup.sh), lint (scripts/lint.sh), and run the test suite. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# Busy-waiting OpenMP threads make a 2-core machine 2-3x slower when two processes share it.
export OMP_WAIT_POLICY=PASSIVE MPLBACKEND=Agg WANDB_MODE=offline WANDB_SILENT=true
bash scripts/lint.sh
.venv/bin/python -m pytest "$@"
