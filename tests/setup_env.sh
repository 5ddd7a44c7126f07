#!/usr/bin/env bash
# Idempotent setup of a fresh machine: the Debian toolchain the rvv target is checked with
# (riscv64 cross gcc + libc, qemu-user), then a virtualenv in .venv with portc and every pinned
# dependency (constraints.txt pins the transitive ones too). Used by the README's two commands.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if ! command -v riscv64-linux-gnu-gcc >/dev/null || ! command -v qemu-riscv64 >/dev/null \
   || [ ! -e /usr/riscv64-linux-gnu/include/stdio.h ]; then
  if command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
    echo "setup: installing gcc-riscv64-linux-gnu libc6-dev-riscv64-cross qemu-user (Debian)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      gcc-riscv64-linux-gnu libc6-dev-riscv64-cross qemu-user >/dev/null
  else
    echo "setup: riscv64-linux-gnu-gcc/qemu-riscv64 missing and apt-get not usable as root;" \
         "rvv qemu tests will skip (or fail under PORTC_REQUIRE_ORACLES=1)" >&2
  fi
fi
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check \
  -c constraints.txt -e ".[dev,examples,models]"
