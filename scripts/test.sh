#!/usr/bin/env bash
# Install everything the test suite needs into ./.venv, then run ruff, mypy and pytest.
# Extra arguments go to pytest (e.g. `bash scripts/test.sh tests/storage -x`).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/_venv.sh
ensure_venv dev,flows,images,tables,web
# Headless Chromium from the Debian packages for the browser tests (tests/web/test_browser.py
# drives it with Playwright; never `playwright install`). Without apt the test skips and says so.
if [ ! -x /usr/bin/chromium ] && command -v apt-get >/dev/null 2>&1; then
  echo "== installing Debian's chromium for the browser tests"
  if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo -n"; fi
  { $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium \
      >/dev/null 2>&1 \
    || { $SUDO apt-get update -qq >/dev/null 2>&1 \
         && $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
              chromium >/dev/null 2>&1; }; } \
    || echo "warning: chromium could not be installed; the browser tests will be skipped"
fi
# CPU build of PyTorch for the DataLoader tests (the torch tests skip if it cannot be installed).
"$VENV/bin/python" -m pip install -q "torch==2.13.0" \
  || echo "warning: torch==2.13.0 could not be installed; tests marked 'torch' will be skipped"
# torchdata's StatefulDataLoader for the resume tests (after torch: it must not pull a CUDA build)
"$VENV/bin/python" -m pip install -q "torchdata==0.11.0" \
  || echo "warning: torchdata could not be installed; the StatefulDataLoader tests will be skipped"
echo "== ruff check datastack data_stack flows deployments"
"$VENV/bin/ruff" check datastack data_stack flows deployments
echo "== mypy datastack"
"$VENV/bin/mypy" datastack
echo "== pytest"
# Two test processes (pytest-xdist; DATASTACK_TEST_WORKERS=1 runs them in one), each test file
# in one of them: the suite's tests mostly wait on servers and child processes, and it runs
# in about half the time on 2 cores.
"$VENV/bin/python" -m pytest -n "${DATASTACK_TEST_WORKERS:-2}" --dist loadfile "$@"
