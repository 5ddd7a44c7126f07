#!/usr/bin/env bash
# Idempotent setup of a fresh machine: a virtualenv in .venv with portc and every pinned
# dependency (constraints.txt pins the transitive ones too). Used by the README's two commands.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check \
  -c constraints.txt -e ".[dev,examples,models]"
