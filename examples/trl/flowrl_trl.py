"""FlowRL on TRL: a TRL GRPO script with two names changed (see the diff in nbs/20_trl.ipynb).

On this CPU machine, on the built-in tiny model and the digit-sum task:
    python examples/trl/flowrl_trl.py --max-steps 4
    accelerate launch --cpu --num_processes 2 --mpirun_hostfile hostfile examples/trl/flowrl_trl.py --max-steps 2
        (on a CPU accelerate starts the processes with MPI: apt-get install openmpi-bin; hostfile: "localhost slots=2")
    python -m torch.distributed.run --nproc_per_node 2 examples/trl/flowrl_trl.py --max-steps 2   (no MPI needed)
On GPUs, with one of the accelerate configs beside this file (and --model, --bf16 for a real model):
    accelerate launch --config_file examples/trl/deepspeed_zero2.yaml examples/trl/flowrl_trl.py \
        --model Qwen/Qwen2.5-1.5B-Instruct --task arith --bf16 --max-completion-length 512
`--dump-weights DIR` writes each rank's adapter and Z-head tensors, and the prompts of its last batch, to
DIR/rank<i>.safetensors (the 2-process test compares them).
"""
import argparse, os
import torch
from datasets import Dataset
from peft import LoraConfig
from flowrl_nb.model import resolve_model_path
from flowrl_nb.arith import ArithTask
from flowrl_nb.task import DigitSumTask
from flowrl_nb.trl import FlowRLGRPOConfig, FlowRLGRPOTrainer


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--model', default='tiny', help="a hub id, a local directory, or 'tiny' (built in)")
    p.add_argument('--task', default='digit_sum', choices=('digit_sum', 'arith'),
                   help="digit_sum: the tiny model's task; arith: word problems rewarded by Math-Verify (a chat model)")
    p.add_argument('--output-dir', default='runs/flowrl_trl')
    p.add_argument('--max-steps', type=int, default=4)
    p.add_argument('--prompts-per-device', type=int, default=2, help='prompts per device per optimizer step')
    p.add_argument('--num-generations', type=int, default=8)
    p.add_argument('--max-completion-length', type=int, default=4)
    p.add_argument('--flowrl-beta', type=float, default=15.0)
    p.add_argument('--learning-rate', type=float, default=1e-3)
    p.add_argument('--z-learning-rate', type=float, default=1e-2)
    p.add_argument('--bf16', action='store_true', help='bf16 mixed precision (a GPU)')
    p.add_argument('--use-vllm', action='store_true', help="TRL's vLLM generation (vllm_mode colocate or server)")
    p.add_argument('--vllm-mode', default='colocate', choices=('colocate', 'server'))
    p.add_argument('--resume', default=None, help='a checkpoint directory, or "latest"')
    p.add_argument('--dump-weights', default=None)
    a = p.parse_args(argv)
    task = DigitSumTask() if a.task == 'digit_sum' else ArithTask()
    rows = task.rows(n=512, seed=0) if a.task == 'digit_sum' else task.rows('train')
    args = FlowRLGRPOConfig(
        output_dir=a.output_dir, max_steps=a.max_steps, seed=0, logging_steps=1, save_steps=max(1, a.max_steps // 2),
        per_device_train_batch_size=a.prompts_per_device * a.num_generations, num_generations=a.num_generations,
        max_completion_length=a.max_completion_length, learning_rate=a.learning_rate, z_learning_rate=a.z_learning_rate,
        flowrl_beta=a.flowrl_beta, bf16=a.bf16, use_cpu=not a.bf16, gradient_checkpointing=a.bf16, report_to='none',
        use_vllm=a.use_vllm, vllm_mode=a.vllm_mode, ddp_backend='gloo' if not a.bf16 else None)
    trainer = FlowRLGRPOTrainer(model=resolve_model_path(a.model),
                                reward_funcs=task.reward, args=args,
                                train_dataset=Dataset.from_list(rows),
                                peft_config=LoraConfig(r=16, lora_alpha=32, target_modules='all-linear', task_type='CAUSAL_LM'))
    trainer.train(resume_from_checkpoint=True if a.resume == 'latest' else a.resume)
    if a.dump_weights:
        from safetensors.torch import save_file
        os.makedirs(a.dump_weights, exist_ok=True)
        model = trainer.accelerator.unwrap_model(trainer.model)
        state = {n: t.detach().cpu().contiguous() for n, t in model.named_parameters() if t.requires_grad}
        state['last_batch.prompt_ids'] = trainer._buffered_inputs[0]['prompt_ids'].cpu().contiguous()  # this rank's prompts
        for k in ('rewards', 'adv'):  # this rank's rows of its last batch, in generation order (whole groups)
            state[f'last_batch.{k}'] = torch.tensor(trainer.last_batch[k])
        save_file(state, os.path.join(a.dump_weights, f'rank{trainer.accelerator.process_index}.safetensors'))
    trainer.save_model(a.output_dir)


if __name__ == '__main__':
    main()
