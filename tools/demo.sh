#!/usr/bin/env bash
# The main job on the built-in CPU default: fills .venv if needed, then runs `flowrl_nb train` with the defaults
# (the built-in tiny Qwen2 model, LoRA adapters, the digit-sum task). Extra arguments go to `flowrl_nb train`.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash tools/venv.sh
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
exec .venv/bin/flowrl_nb train "$@"
