#!/usr/bin/env bash
# The main job on the embedded default: install into ./.venv, refresh the example spec into
# ./.datastack (filesystem storage + catalog), then list the catalog.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${DATASTACK_VENV:-.venv}"
PY="${PYTHON:-python3}"
if [ ! -x "$VENV/bin/python" ]; then
  "$PY" -m venv "$VENV"
fi
export PIP_DISABLE_PIP_VERSION_CHECK=1
"$VENV/bin/python" -m pip install -q --upgrade pip
"$VENV/bin/python" -m pip install -q -e ".[flows]"
export PREFECT_SERVER_ANALYTICS_ENABLED=false
"$VENV/bin/datastack" refresh --spec examples/datasets.yaml "$@"
"$VENV/bin/datastack" ls
