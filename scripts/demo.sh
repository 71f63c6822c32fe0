#!/usr/bin/env bash
# The main job on the embedded default: install into ./.venv, refresh the example spec into
# ./.datastack (filesystem storage + catalog) through the Prefect flow, then list the catalog.
# Extra arguments go to `datastack refresh` (e.g. `--engine local` to skip Prefect).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/_venv.sh
ensure_venv flows
"$VENV/bin/datastack" refresh --spec examples/datasets.yaml "$@"
"$VENV/bin/datastack" ls
