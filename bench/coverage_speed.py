"""Exact coverage on the default task (14 prompts x 54,241 completions): the walk against its compute floor, and
training throughput with coverage every 5 steps (in line, and in the background) against coverage off. Goals: one
measurement <= 1.5x the floor; throughput with coverage_steps=5 >= 0.8x throughput with coverage off.

* **The floor** is the matrix multiplies the walk cannot avoid: for every forward the walk makes (one single-token
  row per non-stop prefix of every prompt, in the walk's own chunks), every `nn.Linear` of the merged policy at that
  many rows, timed with `torch.nn.functional.linear` on random inputs of the same shapes. Attention, norms,
  activations and the KV-cache copies are left out: they are the overhead the ratio measures.
* **The walk** is `ExactCoverage.walk` on a policy whose adapter is not the identity (the merged copy included).
* Floor and walk alternate `--repeats` times; each is reported as its fastest repeat (the machine is shared).
* **Throughput**: one trainer, blocks of `--steps` training steps (coverage is due every `--every` steps; a block ends
  when its measurements have landed) in the order off, inline, background, background, inline, off, ...; the
  evaluator is built and its reference cached first, so the blocks time measurements, not the one-off set-up.

    .venv/bin/python bench/coverage_speed.py            # ~3 min on 2 shared cores
    .venv/bin/python bench/coverage_speed.py --blocks 1 --steps 10
    .venv/bin/python bench/coverage_speed.py --every 20 --steps 40   # coverage less often
"""
import argparse, statistics, tempfile, time


def walk_rows(model, ev) -> list:
    "Rows of every forward the walk makes (a pre-hook on the model counts them)."
    from flowrl_nb.completions import tree_logprobs_batch
    rows = []
    h = model.register_forward_pre_hook(lambda m, a, kw: rows.append(kw['input_ids'].numel()), with_kwargs=True)
    try: tree_logprobs_batch(model, ev.prompt_ids, ev.space, chunk_size=ev.chunk_size)
    finally: h.remove()
    return rows


def floor_seconds(model, rows:list) -> float:
    "Seconds of the walk's matrix multiplies alone: every Linear of `model` at every forward's row count."
    import torch
    weights = [m.weight for m in model.modules() if isinstance(m, torch.nn.Linear)]
    dtype = weights[0].dtype
    xs = {(M, K): torch.randn(M, K, dtype=dtype) for M in set(rows) for K in {w.shape[1] for w in weights}}
    with torch.no_grad():
        t = time.perf_counter()
        for M in rows:
            for w in weights: torch.nn.functional.linear(xs[M, w.shape[1]], w)
        return time.perf_counter() - t


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--repeats', type=int, default=3, help='floor/walk repeats (fastest of each is reported)')
    p.add_argument('--blocks', type=int, default=2, help='blocks per throughput mode')
    p.add_argument('--steps', type=int, default=20, help='training steps per block (a multiple of --every)')
    p.add_argument('--every', type=int, default=5, help='coverage_steps of the inline and background blocks')
    args = p.parse_args(argv)
    import torch
    from flowrl_nb.config import FlowRLConfig
    from flowrl_nb.coverage import CoverageHook, _merged_copy, exact_coverage_for
    from flowrl_nb.trainer import Trainer, default_hooks
    if args.steps % args.every: p.error(f'--steps ({args.steps}) must be a multiple of --every ({args.every})')
    cfg = FlowRLConfig(save_steps=0, eval_steps=0, coverage_steps=0, output_dir=tempfile.mkdtemp() + '/run')
    tr = Trainer(cfg)  # coverage off here: each block gets its own hook, sharing one evaluator
    t = time.perf_counter()
    ev = exact_coverage_for(tr.task, tr.rows, tr.tokenizer, tr.rewards, cfg.max_completion_length, tr.engine.eos_token_ids)
    build = time.perf_counter() - t
    t = time.perf_counter(); ev.reference(tr.model, cfg.temperature); ref = time.perf_counter() - t
    print(f'{ev}, torch threads {torch.get_num_threads()}; set-up (once per run): build {build:.1f} s, reference walk {ref:.1f} s')

    tr.train(5, progress=False)  # a trained adapter (lora_B != 0), so the walk is not the cached reference
    merged = _merged_copy(tr.model)
    rows = walk_rows(merged, ev)
    linears = sum(m.weight.numel() for m in merged.modules() if isinstance(m, torch.nn.Linear))
    flops = 2 * linears * sum(rows)
    floors, walks = [], []
    for _ in range(args.repeats):
        floors.append(floor_seconds(merged, rows))
        t = time.perf_counter(); lp = ev.walk(tr.model, cfg.temperature); walks.append(time.perf_counter() - t)
    mass = max(abs(float(x.exp().sum()) - 1) for x in lp)
    f, w = min(floors), min(walks)
    print(f'walk: {sum(rows):,} rows in {len(rows)} forwards, {flops / 1e12:.3f} TFLOP of matmuls; '
          f'floor {f:.2f} s ({flops / f / 1e9:.0f} GFLOP/s); walk {w:.2f} s; walk / floor = {w / f:.2f} (goal <= 1.5); '
          f'max |total mass - 1| = {mass:.1e}')

    n = args.every
    hooks = {'off': CoverageHook(0), 'inline': CoverageHook(n, evaluator=ev),
             'background': CoverageHook(n, evaluator=ev, background=True)}
    order = [m for b in range(args.blocks) for m in (('off', 'inline', 'background') if b % 2 == 0 else ('background', 'inline', 'off'))]
    secs = {m: [] for m in hooks}
    for mode in order:
        tr.hooks = default_hooks(cfg, coverage=hooks[mode])
        while tr.step_count % n: tr.train(1, progress=False)  # blocks start on a multiple of --every
        t = time.perf_counter(); tr.train(args.steps, progress=False); secs[mode].append((time.perf_counter() - t) / args.steps)
    off = statistics.mean(secs['off'])
    print(f'throughput, coverage every {n} steps, {args.blocks} block(s) of {args.steps} steps per mode:')
    for mode in ('off', 'inline', 'background'):
        s = statistics.mean(secs[mode])
        print(f'{mode:>10}: {s:.3f} s/step ({", ".join(f"{x:.3f}" for x in secs[mode])}); throughput vs off {off / s:.2f}'
              + (' (goal >= 0.8 at every 5)' if mode != 'off' else ''))


if __name__ == '__main__':
    main()
