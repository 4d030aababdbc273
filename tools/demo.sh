#!/usr/bin/env bash
# The main job on the built-in CPU default: fills .venv if needed, then runs `flowrl_nb demo`: FlowRL, GRPO and
# REINFORCE++ from the same start on the built-in tiny Qwen2 model and digit-sum task, with exact coverage, writing
# runs/demo/summary.json and runs/demo/report.html. Extra arguments go to `flowrl_nb demo` (see `flowrl_nb demo -h`).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash tools/venv.sh
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
exec .venv/bin/flowrl_nb demo "$@"
