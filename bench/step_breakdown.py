"""Where the time of one training step goes, for the default tiny config or a preset (a benchmark, not a test).

    .venv/bin/python bench/step_breakdown.py [--algorithm flowrl] [--steps 6] [--threads 1]
    .venv/bin/python bench/step_breakdown.py --preset smollm2-arith --steps 4 --threads 2     # the real model

Prints seconds per phase of `Trainer.train_step` (from its own `time/*` metrics), tokens/s, and the ratio of a full
step to the sum of its unavoidable parts measured standalone on the same batch shapes (the prompts of the step just
taken; until 2026-11-22 the standalone side used the task's first 16 prompts, but the default task has only 14, so it
measured 112 sequences against the step's 128 and overstated the ratio by about 14 %):

* one sampling call (`engine.generate` for prompts_per_step x num_generations completions),
* one reference forward (`reference_logprobs`, adapters off, no grad),
* K = num_mini_batches forward+backward passes (`token_logprobs` with the Z head, backward of a scalar).

Goal: full step / unavoidable parts <= 1.15. Everything else (the behaviour-policy forward for log pi_old, rewards,
advantages, optimizer steps, gradient clipping, metrics) is overhead. Full steps and standalone parts are measured
interleaved and summarised by their medians, so a load spike from other processes hits both sides alike.
"""
import argparse, statistics, sys, tempfile, time
from pathlib import Path


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--algorithm', default='flowrl', choices=['flowrl', 'grpo', 'reinforce_pp'])
    ap.add_argument('--steps', type=int, default=6, help='measured steps (after 2 warm-up steps)')
    ap.add_argument('--threads', type=int, default=1, help='torch threads (default 1: fastest at the tiny shapes)')
    ap.add_argument('--preset', help='a named config (flowrl_nb.config.PRESETS), e.g. smollm2-arith; default: the tiny defaults')
    ap.add_argument('--warmup', type=int, default=2, help='unmeasured steps first (default 2)')
    args = ap.parse_args(argv)
    import torch
    torch.set_num_threads(args.threads)
    from flowrl_nb.config import FlowRLConfig
    from flowrl_nb.trainer import Trainer
    from flowrl_nb.model import token_logprobs, reference_logprobs

    base = FlowRLConfig.preset(args.preset) if args.preset else FlowRLConfig()
    cfg = base.replace(algorithm=args.algorithm, save_steps=0, coverage_steps=0, eval_steps=0, output_dir=tempfile.mkdtemp())
    tr = Trainer(cfg)
    n, K = cfg.num_generations, cfg.num_mini_batches
    for _ in range(args.warmup): tr.train_step()  # warm-up (allocator, lazy inits)

    def sample():  # the prompts of the step just taken: the same batch shape (prompts_per_step x n rows) as the step's
        prompts = tr.last_batch['prompts'][::n]
        assert len(prompts) == cfg.prompts_per_step
        return tr.engine.generate(prompts, n, cfg.max_completion_length, temperature=cfg.temperature)

    full, phases, parts, tokens = [], {'time/sample': [], 'time/reference': [], 'time/update': []}, {'sample': [], 'reference': [], 'fwd_bwd': []}, []
    for _ in range(args.steps):
        t = time.perf_counter(); m = tr.train_step(); full.append(time.perf_counter() - t)
        for k in phases: phases[k].append(m[k])
        t = time.perf_counter(); b = sample(); parts['sample'].append(time.perf_counter() - t)
        tokens.append(b.num_tokens)
        P, C, M, mask = b.prompt_ids, b.prompt_mask, b.completion_ids, b.completion_mask.float()
        t = time.perf_counter(); reference_logprobs(tr.model, P, C, M, mask, temperature=cfg.temperature)
        parts['reference'].append(time.perf_counter() - t)
        tr.model.train()
        t = time.perf_counter()
        for idx in torch.arange(len(b)).chunk(K):
            out = token_logprobs(tr.model, P[idx], C[idx], M[idx], mask[idx], temperature=cfg.temperature, z_head=tr.z_head)
            loss = (out.logp * mask[idx]).sum() + (out.log_z.sum() if out.log_z is not None else 0)
            loss.backward()
        parts['fwd_bwd'].append(time.perf_counter() - t)
        tr.optimizer.zero_grad(set_to_none=True)

    med = {k: statistics.median(v) for k, v in parts.items()}
    step = statistics.median(full)
    unavoidable = sum(med.values())
    ntok = statistics.median(tokens)
    print(f'{args.algorithm} on {cfg.model_name_or_path} ({args.preset or "defaults"}): {cfg.prompts_per_step} prompts x {n} samples, max {cfg.max_completion_length} new tokens, '
          f'K={K} mini-batches, torch threads={args.threads}, {args.steps} measured steps')
    print('\nfull step, by phase (medians of the trainer\'s own time/* metrics):')
    for k, v in phases.items(): print(f'  {k:<16} {statistics.median(v):7.3f} s')
    seq_tok = len(b) * (P.shape[1] + M.shape[1])
    print(f'  {"step (wall)":<16} {step:7.3f} s   ({ntok / step:,.0f} sampled completion tokens/s; '
          f'{seq_tok / step:,.0f} sequence tokens/s counting padded prompt + completion once)')
    print('\nunavoidable parts measured standalone (medians):')
    for k, v in med.items(): print(f'  {k:<16} {v:7.3f} s')
    print(f'  {"sum":<16} {unavoidable:7.3f} s')
    ratio = step / unavoidable
    print(f'\nratio full step / unavoidable parts = {ratio:.2f} (goal <= 1.15: {"met" if ratio <= 1.15 else "NOT met"})')
    assert len(b) == len(tr.last_batch['prompts'])  # both sides measured on the same number of sequences
    over = phases['time/reference']
    print(f'  the trainer\'s "reference" phase: {statistics.median(over):.3f} s (standalone reference forward: '
          f'{med["reference"]:.3f} s; log pi_old reuses the sampler\'s log-probs when the engine says they are exact)')
    return ratio


if __name__ == '__main__':
    sys.exit(0 if main() is not None else 1)
