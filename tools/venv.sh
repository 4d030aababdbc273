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
# The docs site's front-end libraries (KaTeX for math, MiniSearch for search), pinned by tools/site/package-lock.json,
# into .venv/site/node_modules; tools/docs.py copies them into the site, so building it needs no network.
site_stamp=$(cat tools/site/package.json tools/site/package-lock.json | sha256sum | cut -d' ' -f1)
if [ "$(cat .venv/site/.stamp 2>/dev/null)" != "$site_stamp" ]; then
  if command -v npm >/dev/null 2>&1; then
    echo "[venv] installing the docs site's KaTeX and MiniSearch (npm ci -> .venv/site)" >&2
    rm -rf .venv/site && mkdir -p .venv/site && cp tools/site/package.json tools/site/package-lock.json .venv/site/
    if (cd .venv/site && npm ci --no-audit --no-fund --loglevel=error >&2); then echo "$site_stamp" > .venv/site/.stamp
    else echo "[venv] npm ci failed: the docs build (make docs) will say what is missing" >&2; fi
  else
    echo "[venv] npm not found: the docs build (make docs) needs it for its search and math libraries (apt-get install npm)" >&2
  fi
fi
