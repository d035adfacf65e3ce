#!/usr/bin/env bash
# Create .venv and install the project with its test and dev tools. Safe to re-run.
#
# TORCH_PACKAGES picks the PyTorch build. The default pins the versions this project is tested
# with; on another machine, e.g. TORCH_PACKAGES="torch torchvision" takes the newest release, and
# TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu a CPU-only build (as the GitHub workflow).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
TORCH_PACKAGES=${TORCH_PACKAGES:-"torch==2.14.1 torchvision==0.29.1"}
TORCH_INDEX=()
if [ -n "${TORCH_INDEX_URL:-}" ]; then
  TORCH_INDEX=(--index-url "$TORCH_INDEX_URL")
fi

if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
if ! .venv/bin/python -c "import torch, torchvision" 2>/dev/null; then
  echo "installing $TORCH_PACKAGES (a few GB, takes minutes)"
  # shellcheck disable=SC2086
  .venv/bin/python -m pip install -q --disable-pip-version-check "${TORCH_INDEX[@]}" $TORCH_PACKAGES
fi
.venv/bin/python -m pip install -q --disable-pip-version-check -e ".[dev]"
