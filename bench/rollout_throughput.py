"""Rollout throughput on the real model: the HF rollout engine against a plain `model.generate` of the same batch and
adapter, and tokens/s by batch shape (a benchmark, not a test).

    .venv/bin/python bench/rollout_throughput.py                       # SmolLM2-135M-Instruct, the preset's shapes
    .venv/bin/python bench/rollout_throughput.py --reps 5 --shapes 8 16 32 64 --threads 2

1. **Engine vs plain generate.** `HFRolloutEngine.generate` does what a plain sampled `generate` does, plus it
   records each sampled token's log-prob (so the trainer needs no second forward for log pi_old) and builds the
   `RolloutBatch`. Both sides run on the same prompts, with the same LoRA adapter and the same torch seed, so they
   sample the *same tokens* (checked), and the ratio of their times is a ratio of the same work. They are measured
   interleaved (engine, plain, engine, plain, ...) so a load spike from another process hits both alike; medians.
   Goal: engine tokens/s >= 0.95 x plain tokens/s.
2. **Batch shape.** On a CPU, sampling a 49,152-token vocabulary a few sequences at a time is slow; more sequences per
   `generate` call use the cores better, up to a point. For a fixed total of sequences, tokens/s of plain `generate`
   with S sequences per call (S/num_generations prompts x num_generations samples), interleaved over shapes.
"""
import argparse, os, statistics, sys, time
os.environ.setdefault('TOKENIZERS_PARALLELISM', 'false')


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--preset', default='smollm2-arith')
    ap.add_argument('--reps', type=int, default=5, help='interleaved repetitions per side')
    ap.add_argument('--shapes', type=int, nargs='+', default=[8, 16, 32, 64], help='sequences per generate call')
    ap.add_argument('--total', type=int, default=64, help='sequences per measurement in the batch-shape sweep')
    ap.add_argument('--threads', type=int, default=None, help='torch threads (default: torch\'s own choice)')
    a = ap.parse_args(argv)
    import torch
    if a.threads: torch.set_num_threads(a.threads)
    from flowrl_nb.config import FlowRLConfig
    from flowrl_nb.model import LoraSpec, load_policy
    from flowrl_nb.rewards import prompt_text
    from flowrl_nb.rollout import HFRolloutEngine
    from flowrl_nb.task import task_from_config

    cfg = FlowRLConfig.preset(a.preset)
    lora = LoraSpec(r=cfg.lora_r, alpha=cfg.lora_alpha, dropout=cfg.lora_dropout, target_modules=tuple(cfg.lora_target_modules))
    model, tok = load_policy(cfg.model_name_or_path, lora=lora)
    with torch.no_grad():  # a trained-looking adapter, not the identity: the LoRA matmuls run and change the samples
        g = torch.Generator().manual_seed(0)
        for name, p in model.named_parameters():
            if 'lora_B' in name: p.copy_(0.01 * torch.randn(p.shape, generator=g))
    rows = task_from_config(cfg).rows()
    n, T, temp = cfg.num_generations, cfg.max_completion_length, cfg.temperature
    prompts = [prompt_text(r['prompt'], tok) for r in rows[:cfg.prompts_per_step]]
    engine = HFRolloutEngine(model, tok, max_prompt_length=cfg.max_prompt_length)
    enc = tok(prompts, padding=True, padding_side='left', return_tensors='pt')
    print(f'{cfg.model_name_or_path} + LoRA r={cfg.lora_r} on {len(cfg.lora_target_modules)} projections; {len(prompts)} prompts x '
          f'{n} samples, <= {T} new tokens, temperature {temp}; torch threads {torch.get_num_threads()}')

    def plain(ids, mask, k, seed):
        torch.manual_seed(seed)
        with torch.no_grad():
            out = model.generate(input_ids=ids, attention_mask=mask, do_sample=True, temperature=temp, top_k=0, top_p=1.0,
                                 max_new_tokens=T, num_return_sequences=k, eos_token_id=engine.eos_token_ids,
                                 pad_token_id=engine.pad_token_id)
        return out[:, ids.shape[1]:]

    def lengths(new):  # sampled tokens per row: up to and including the first EOS
        eos = torch.isin(new, torch.tensor(engine.eos_token_ids))
        return torch.where(eos.any(1), eos.float().argmax(1) + 1, torch.full((len(new),), new.shape[1]))

    def count(new): return int(lengths(new).sum())

    def same_tokens(b, new):
        L, Lp = b.completion_mask.sum(1), lengths(new)
        return torch.equal(L, Lp) and all(torch.equal(b.completion_ids[i, :l], new[i, :l]) for i, l in enumerate(L.tolist()))

    # 1. engine vs plain, interleaved, same seed -> same tokens
    model.eval()
    plain(enc.input_ids, enc.attention_mask, n, 0); engine.generate(prompts, n, T, temperature=temp)  # warm-up
    eng_tps, pl_tps, same = [], [], 0
    for rep in range(a.reps):
        torch.manual_seed(100 + rep)
        t = time.perf_counter(); b = engine.generate(prompts, n, T, temperature=temp); te = time.perf_counter() - t
        t = time.perf_counter(); new = plain(enc.input_ids, enc.attention_mask, n, 100 + rep); tp = time.perf_counter() - t
        ntok = int(b.completion_mask.sum())
        same += same_tokens(b, new)
        eng_tps.append(ntok / te); pl_tps.append(count(new) / tp)
        print(f'  rep {rep + 1}: engine {ntok} tokens in {te:.2f} s ({ntok / te:.0f} tok/s), plain {count(new)} in {tp:.2f} s '
              f'({count(new) / tp:.0f} tok/s)', flush=True)
    ratio = statistics.median(e / p for e, p in zip(eng_tps, pl_tps))
    print(f'identical samples in {same} of {a.reps} reps; median engine/plain tokens/s = {ratio:.3f} '
          f'(goal >= 0.95: {"met" if ratio >= 0.95 else "NOT met"})\n')

    # 2. tokens/s by sequences per call, for a.total sequences each time, interleaved over shapes
    print(f'plain generate, {a.total} sequences per measurement, by sequences per call (n={n} samples per prompt):')
    many = [prompt_text(r['prompt'], tok) for r in rows[:max(a.total // n, 1)]]
    res = {s: [] for s in a.shapes}
    for rep in range(max(2, a.reps // 2)):
        for s in a.shapes:
            k = max(s // n, 1)
            t, toks = time.perf_counter(), 0
            for i in range(0, len(many), k):
                e = tok(many[i:i + k], padding=True, padding_side='left', return_tensors='pt')
                toks += count(plain(e.input_ids, e.attention_mask, n, rep))
            res[s].append(toks / (time.perf_counter() - t))
    best = max(res, key=lambda s: statistics.median(res[s]))
    for s in a.shapes:
        print(f'  {s:4d} sequences/call ({max(s // n, 1)} prompts x {n}): {statistics.median(res[s]):6.0f} tok/s'
              + ('   <- best' if s == best else ''))
    pre = cfg.prompts_per_step * n
    print(f'the preset samples {pre} sequences per call ({cfg.prompts_per_step} prompts x {n})')
    return ratio


if __name__ == '__main__':
    sys.exit(0 if main() is not None else 1)
