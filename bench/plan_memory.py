"""The memory planner (`flowrl_nb.plan`) against the measured peak of real training steps on this CPU (a benchmark).

    .venv/bin/python bench/plan_memory.py                        # the tiny model and SmolLM2 (the smollm2-arith preset)
    .venv/bin/python bench/plan_memory.py --model tiny --steps 2

Each measurement runs in its own process: the resident set size (RSS) is read every 2 ms from /proc while the
trainer is built and takes `--steps` steps; the peak minus the RSS before the model loaded is what the run added. The
baseline comes after a small warm-up run of the tiny model (then `malloc_trim`), so what every run imports and
initialises once (peft, the task, oneDNN and autograd's threads: ~230 MB measured) is not counted as the run's. The
child runs with `MALLOC_MMAP_THRESHOLD_=65536`: glibc's dynamic threshold keeps large freed blocks in the heap, and
RSS then counts tensors torch has already freed (2x on the tiny model). The plan is computed for the lengths the run
really had (the longest prompt and completion of its batches, read from the rollout engine), on device "cpu" (no
CUDA context, fp32).
Goal (issue 16): the plan within 20 % of the measured peak.
"""
import argparse, json, os, subprocess, sys

CASES = {  # name -> config overrides: batches big enough that the run's own memory dwarfs the allocator's noise
    'tiny': dict(model_name_or_path='tiny', prompts_per_step=32, num_generations=16, num_mini_batches=2, max_steps=2,
                 coverage_steps=0, save_steps=0),
    'smollm2': dict(preset='smollm2-arith', max_steps=2, eval_steps=0, save_steps=0),
}


def child(case: str, steps: int) -> dict:
    import ctypes, gc, threading, time
    import torch, transformers  # noqa: F401  (imported before the baseline: their import is not the run's memory)
    from flowrl_nb.config import FlowRLConfig
    from flowrl_nb.plan import plan_from_config
    from flowrl_nb.trainer import Trainer
    import tempfile
    torch.set_num_threads(2)
    page = os.sysconf('SC_PAGE_SIZE')
    rss = lambda: int(open('/proc/self/statm').read().split()[1]) * page
    kw = dict(CASES[case]); preset = kw.pop('preset', None)
    cfg = (FlowRLConfig.preset(preset, **kw) if preset else FlowRLConfig(**kw)).replace(output_dir=tempfile.mkdtemp() + '/run')
    # warm-up: a small run first, so that what any run imports and initialises once (peft, the task, oneDNN, autograd's
    # threads: ~230 MB) is in the baseline; then its freed memory goes back to the OS (malloc_trim)
    warm = Trainer(FlowRLConfig(prompts_per_step=2, num_generations=2, num_mini_batches=1, max_steps=1, coverage_steps=0,
                                save_steps=0, output_dir=tempfile.mkdtemp() + '/warm'))
    warm.train(1, progress=False)
    del warm; gc.collect(); ctypes.CDLL('libc.so.6').malloc_trim(0)
    base, peak, done = rss(), [0], threading.Event()
    def watch():
        while not done.is_set(): peak[0] = max(peak[0], rss()); time.sleep(0.002)
    th = threading.Thread(target=watch, daemon=True); th.start()
    tr = Trainer(cfg)
    shapes = []
    gen = tr.engine.generate
    def recording(*a, **k):
        b = gen(*a, **k); shapes.append((b.prompt_ids.shape[1], b.completion_ids.shape[1])); return b
    tr.engine.generate = recording
    tr.train(steps, progress=False)
    done.set(); th.join()
    P, T = max(s[0] for s in shapes), max(s[1] for s in shapes)
    plan = plan_from_config(cfg.replace(max_prompt_length=max(P, 1), max_completion_length=T), device='cpu')
    return dict(case=case, measured=peak[0] - base, planned=plan.total, P=P, T=T, table=plan.table())


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--model', choices=list(CASES), nargs='*', default=list(CASES))
    ap.add_argument('--steps', type=int, default=2)
    ap.add_argument('--child', help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.child:
        print('RESULT ' + json.dumps(child(a.child, a.steps)), flush=True)
        return 0
    ok = True
    for case in a.model:
        # glibc's dynamic mmap threshold keeps large freed blocks in the heap, so RSS would count tensors torch has already
        # freed (measured: a 2x overcount on the tiny model); a fixed threshold returns them to the OS, and RSS follows
        # what is live
        env = dict(os.environ, MALLOC_MMAP_THRESHOLD_='65536')
        p = subprocess.run([sys.executable, __file__, '--child', case, '--steps', str(a.steps)], capture_output=True, text=True, env=env)
        line = [l for l in p.stdout.splitlines() if l.startswith('RESULT ')]
        if p.returncode or not line:
            print(f'{case}: the measurement failed\n{p.stderr[-2000:]}'); ok = False; continue
        r = json.loads(line[0][7:])
        ratio = r['planned'] / r['measured']
        print(f"{case}: planned {r['planned'] / 2**20:,.0f} MiB, measured peak {r['measured'] / 2**20:,.0f} MiB over the run's "
              f"start (prompts {r['P']} + completions {r['T']} tokens); planned/measured = {ratio:.2f} "
              f"(goal 0.8-1.2: {'met' if 0.8 <= ratio <= 1.2 else 'NOT met'})")
        print(r['table'] + '\n')
        ok &= 0.8 <= ratio <= 1.2
    return 0 if ok else 1


if __name__ == '__main__':
    sys.exit(main())
