#!/usr/bin/env bash
# FlowRL on TRL with generation on a separate vLLM server (GPU only; not runnable on the CPU CI machine).
# GPU 0 serves the model with TRL's `trl vllm-serve`; GPUs 1..N train. After every optimizer step TRL pushes the
# policy's weights to the server (the adapter merged into the base; flowrl_nb.trl keeps the log Z head out of the push).
# FlowRL's truncated importance sampling against the server's log-probs is on (tis_cap='auto' -> 3 with vLLM).
# Needs `pip install "flowrl_nb[trl]" "trl[vllm]"` (TRL 1.16's vllm extra: vllm>=0.22,<=0.31).
set -euo pipefail
MODEL=${MODEL:-Qwen/Qwen2.5-1.5B-Instruct}
TRAIN_GPUS=${TRAIN_GPUS:-1,2,3}
NUM_TRAIN=$(echo "$TRAIN_GPUS" | tr ',' '\n' | wc -l)
CUDA_VISIBLE_DEVICES=0 trl vllm-serve --model "$MODEL" --tensor-parallel-size 1 &
server=$!
trap 'kill $server' EXIT
CUDA_VISIBLE_DEVICES=$TRAIN_GPUS accelerate launch --num_processes "$NUM_TRAIN" \
  "$(dirname "$0")/flowrl_trl.py" --model "$MODEL" --task arith --bf16 --use-vllm --vllm-mode server --max-completion-length 512 "$@"
