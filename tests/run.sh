#!/usr/bin/env bash
# Set everything up, then run the whole test suite (what CI runs through .ci/run).
set -euo pipefail
cd "$(dirname "$0")/.."
bash tests/setup_env.sh
.venv/bin/ruff check .
exec .venv/bin/python -m pytest -q "$@"
