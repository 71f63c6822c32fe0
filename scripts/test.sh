#!/usr/bin/env bash
# Install everything the test suite needs into ./.venv, then run ruff, mypy and pytest.
# Extra arguments go to pytest (e.g. `bash scripts/test.sh tests/storage -x`).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${DATASTACK_VENV:-.venv}"
PY="${PYTHON:-python3}"
if [ ! -x "$VENV/bin/python" ]; then
  "$PY" -m venv "$VENV"
fi
export PIP_DISABLE_PIP_VERSION_CHECK=1
"$VENV/bin/python" -m pip install -q --upgrade pip
"$VENV/bin/python" -m pip install -q -e ".[dev,flows]"
# CPU build of PyTorch for the DataLoader tests (the torch tests skip if it cannot be installed).
"$VENV/bin/python" -m pip install -q "torch==2.13.0" \
  || echo "warning: torch==2.13.0 could not be installed; tests marked 'torch' will be skipped"
echo "== ruff check datastack"
"$VENV/bin/ruff" check datastack
echo "== mypy datastack"
"$VENV/bin/mypy" datastack
echo "== pytest"
export PREFECT_SERVER_ANALYTICS_ENABLED=false
"$VENV/bin/python" -m pytest "$@"
