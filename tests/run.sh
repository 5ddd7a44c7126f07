#!/usr/bin/env bash
# Set everything up, then run the test suite (what CI runs through .ci/run): one pytest worker
# per core (PORTC_TEST_WORKERS overrides; 0 runs in this process), each with one BLAS thread so
# the workers do not oversubscribe the cores. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tests/setup_env.sh
.venv/bin/ruff check .
WORKERS=${PORTC_TEST_WORKERS:-$(nproc)}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} OPENBLAS_NUM_THREADS=${OPENBLAS_NUM_THREADS:-1} \
       MKL_NUM_THREADS=${MKL_NUM_THREADS:-1}
# light_inception_v1/light_resnet50 on each simulator (7 minutes of CPU) only with PORTC_HEAVY=1
SELECT=()
[ "${PORTC_HEAVY:-0}" = 1 ] || SELECT=(-m "not heavy")
exec .venv/bin/python -m pytest -q -n "$WORKERS" --dist worksteal --durations=25 "${SELECT[@]}" "$@"
