#!/usr/bin/env bash
# Create and fill .venv when missing or when the dependency files changed since it was filled.
# Sourced by tools/demo.sh and tools/test.sh; safe to run on its own.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PY=${PYTHON:-python3}
stamp_src=$(cat settings.ini setup.py constraints.txt | sha256sum | cut -d' ' -f1)
if [ ! -x .venv/bin/python ] || [ "$(cat .venv/.flowrl_nb_stamp 2>/dev/null)" != "$stamp_src" ]; then
  echo "[venv] filling .venv (CPU torch pinned by constraints.txt; ~2 min the first time)" >&2
  [ -x .venv/bin/python ] || "$PY" -m venv .venv
  # Always .venv/bin/python -m pip: a moved venv's pip script installs into the system Python.
  .venv/bin/python -m pip install -q --disable-pip-version-check --upgrade pip >&2
  .venv/bin/python -m pip install -q --disable-pip-version-check -c constraints.txt -e '.[dev,quant,math,embed,smol,trl]' >&2
  echo "$stamp_src" > .venv/.flowrl_nb_stamp
fi
