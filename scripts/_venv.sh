# Sourced by scripts/demo.sh and scripts/test.sh: create ./.venv (or $DATASTACK_VENV) and
# install the project with the extras given as arguments, e.g. `ensure_venv dev,flows`.
ensure_venv() {
  VENV="${DATASTACK_VENV:-.venv}"
  PY="${PYTHON:-python3}"
  if [ ! -x "$VENV/bin/python" ]; then
    "$PY" -m venv "$VENV"
  fi
  export PIP_DISABLE_PIP_VERSION_CHECK=1
  export PREFECT_SERVER_ANALYTICS_ENABLED=false
  "$VENV/bin/python" -m pip install -q --upgrade pip
  "$VENV/bin/python" -m pip install -q -e ".[$1]"
}
