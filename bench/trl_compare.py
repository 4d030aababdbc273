"""flowrl_nb's `Trainer` against TRL's `GRPOTrainer` at equal settings, side by side in one run (a benchmark; issue 17).

    python bench/trl_compare.py                                   # tiny and SmolLM2, 3 timed batches each
    python bench/trl_compare.py --models tiny --batches 5

Per model, three variants, each run by both engines:
  * GRPO without a reference (flowrl_nb `kl_coef=0`, `ref_forward='when_needed'` / TRL `beta=0`: neither computes π_ref),
  * GRPO with one (`kl_coef=0.04` / `beta=0.04`: both compute π_ref with the adapter off),
  * FlowRL: flowrl_nb's native FlowRL against `flowrl_nb.trl.FlowRLGRPOTrainer` (FlowRL on TRL).
Equal settings: the same model, LoRA r=16 / alpha 32 on all seven projections, fp32, no gradient checkpointing, the
same prompts x generations x max new tokens, the same optimizer steps per rollout batch (flowrl_nb `num_mini_batches`
= TRL `steps_per_generation`, one micro-batch each), constant learning rate, the model's own task and reward.
Both sample with transformers' `generate` (HF engine; TRL without vLLM). A "batch" is one rollout batch and its
optimizer steps. The first batch of each run is a warm-up; the table gives medians over the timed batches, and
tokens/s counts the completion tokens each side actually sampled (both sample from the same model, so lengths agree
in distribution; the mean length is printed). The runs of one variant alternate which engine goes first.
"""
import argparse, os, statistics, tempfile, time
os.environ.setdefault('TOKENIZERS_PARALLELISM', 'false')


def _base(name):
    "The model's own flowrl_nb config, which both sides take their task, learning rates and temperature from."
    from flowrl_nb.config import FlowRLConfig
    return FlowRLConfig.preset('smollm2-arith') if name != 'tiny' else FlowRLConfig()


def native(name, algorithm, kl, a):
    "Seconds per batch, completion tokens per batch and per-phase seconds of flowrl_nb's Trainer."
    from flowrl_nb.config import FlowRLConfig
    from flowrl_nb.trainer import Trainer
    base = _base(name)
    cfg = FlowRLConfig(**{**base.to_dict(), **dict(
        algorithm=algorithm, kl_coef=kl, ref_forward=a.ref_forward, lora_r=16, lora_alpha=32, lora_dropout=0.0, torch_dtype='float32',
        gradient_checkpointing=False, prompts_per_step=a.prompts, num_generations=a.generations,
        num_mini_batches=a.mini_batches, max_completion_length=a.tokens, max_steps=a.batches + 1, warmup_steps=0,
        eval_steps=0, coverage_steps=0, save_steps=0, output_dir=tempfile.mkdtemp(), seed=0)})
    tr = Trainer(cfg)
    times, tokens, phases = [], [], []
    for b in range(a.batches + 1):
        t = time.perf_counter(); m = tr.train_step(); dt = time.perf_counter() - t
        if b:
            times.append(dt); tokens.append(m['completion/mean_length'] * a.prompts * a.generations)
            phases.append((m['time/sample'], m['time/reference'], m['time/update']))
    return times, tokens, phases


def trl_run(name, algorithm, kl, a):
    "Seconds per batch, completion tokens per batch and per-phase seconds of TRL's GRPOTrainer (or FlowRL on it)."
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import TrainerCallback
    from trl import GRPOConfig, GRPOTrainer
    from flowrl_nb.config import LORA_TARGETS
    from flowrl_nb.model import resolve_model_path
    from flowrl_nb.task import task_from_config
    from flowrl_nb.trl import FlowRLGRPOConfig, FlowRLGRPOTrainer
    base = _base(name)
    task = task_from_config(base)
    rows = task.rows() if name == 'tiny' else task.rows('train')
    per_batch = a.prompts * a.generations
    kw = dict(output_dir=tempfile.mkdtemp(), per_device_train_batch_size=per_batch // a.mini_batches,
              steps_per_generation=a.mini_batches, gradient_accumulation_steps=1, num_generations=a.generations,
              max_completion_length=a.tokens, max_steps=(a.batches + 1) * a.mini_batches, learning_rate=base.learning_rate,
              lr_scheduler_type='constant', weight_decay=0.0, max_grad_norm=1.0, temperature=base.temperature,
              epsilon=0.2, epsilon_high=0.28, logging_steps=1, save_strategy='no', report_to='none', use_cpu=True,
              bf16=False, gradient_checkpointing=False, seed=0, dataloader_num_workers=0)
    if algorithm == 'flowrl':
        args = FlowRLGRPOConfig(**kw, z_learning_rate=base.z_learning_rate, flowrl_beta=base.beta)
        cls = FlowRLGRPOTrainer
    else:
        args, cls = GRPOConfig(**kw, beta=kl, loss_type='bnpo'), GRPOTrainer  # bnpo: the token mean of flowrl_nb's GRPO
    marks = []
    class Clock(TrainerCallback):
        def on_train_begin(self, *x, **k): marks.append(time.perf_counter())
        def on_step_end(self, *x, **k): marks.append(time.perf_counter())
    tr = cls(model=resolve_model_path(base.model_name_or_path), reward_funcs=task.reward, args=args,
             train_dataset=Dataset.from_list(rows * 4),
             peft_config=LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules=list(LORA_TARGETS),
                                    task_type='CAUSAL_LM'),
             callbacks=[Clock()])
    spent = {'generate': [], 'prepare': []}  # TRL's sampling call, and all of a batch's preparation around it
    def timed(f, key):
        def g(*x, **k):
            t = time.perf_counter(); out = f(*x, **k); spent[key].append(time.perf_counter() - t); return out
        return g
    tr._generate = timed(tr._generate, 'generate')
    tr._generate_and_score_completions = timed(tr._generate_and_score_completions, 'prepare')
    torch.set_num_threads(a.threads)
    tr.train()
    K = a.mini_batches
    ends = marks[::K]  # train begin, then the end of every K-th optimizer step = the end of a batch
    times = [e - s for s, e in zip(ends[:-1], ends[1:])][1:]
    lengths = [h['completions/mean_length'] for h in tr.state.log_history if 'completions/mean_length' in h]
    # TRL's phases: its sampling call; the rest of its preparation (rewards and the no-grad passes); the updates.
    # flowrl_nb's time/sample includes the rewards, which are cheap on these tasks
    gen, prep = spent['generate'][1:], spent['prepare'][1:]
    phases = [(g, p - g, t - p) for g, p, t in zip(gen, prep, times)]
    return times, [l * per_batch for l in lengths[1:]], phases


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--models', nargs='+', default=['tiny', 'smollm2-135m-instruct'])
    ap.add_argument('--variants', nargs='+', default=['grpo-kl0', 'grpo-kl0.04', 'flowrl'])
    ap.add_argument('--batches', type=int, default=3, help='timed rollout batches per run (after one warm-up batch)')
    ap.add_argument('--prompts', type=int, default=4)
    ap.add_argument('--generations', type=int, default=8)
    ap.add_argument('--mini-batches', type=int, default=2, help='optimizer steps per rollout batch')
    ap.add_argument('--tokens', type=int, default=None, help='max new tokens (default: 4 for tiny, 32 for SmolLM2)')
    ap.add_argument('--threads', type=int, default=2)
    ap.add_argument('--ref-forward', default='when_needed', choices=('always', 'when_needed'),
                    help="flowrl_nb's ref_forward: when_needed skips π_ref where the objective has no use for it, as TRL "
                         "does at beta=0 (equal work); always also computes it at kl 0, for the ref_kl metric")
    a = ap.parse_args(argv)
    import torch
    torch.set_num_threads(a.threads)
    rows = []
    for name in a.models:
        tokens = a.tokens or (4 if name == 'tiny' else 32)
        b = argparse.Namespace(**{**vars(a), 'tokens': tokens})
        print(f'{name}: {a.prompts} prompts x {a.generations} generations x <= {tokens} new tokens, '
              f'{a.mini_batches} optimizer steps per batch, LoRA r16 on all seven projections, fp32, '
              f'{a.batches} timed batches; torch threads {a.threads}; flowrl_nb ref_forward={a.ref_forward}', flush=True)
        for i, v in enumerate(a.variants):
            algorithm, kl = ('flowrl', 0.0) if v == 'flowrl' else ('grpo', float(v.split('kl')[1]))
            order = [('flowrl_nb', native), ('TRL', trl_run)]
            if i % 2: order.reverse()
            res = {}
            phase = {}
            for side, f in order:
                times, toks, ph = f(name, algorithm, kl, b)
                torch.set_num_threads(a.threads)
                res[side] = (statistics.median(times), statistics.median(t / s for t, s in zip(toks, times)),
                             statistics.mean(toks) / (a.prompts * a.generations))
                phase[side] = [statistics.median(x[i] for x in ph) for i in range(3)]
            (tn, kn, ln), (tt, kt, lt) = res['flowrl_nb'], res['TRL']
            rows.append((name, v, tn, tt, kn, kt, ln, lt))
            print(f'  {v:12s} s/batch flowrl_nb {tn:6.2f}  TRL {tt:6.2f}  | steps/s ratio {tt / tn:4.2f}x | '
                  f'tok/s flowrl_nb {kn:7.1f}  TRL {kt:7.1f}  ratio {kn / kt:4.2f}x | mean length {ln:4.1f} / {lt:4.1f}',
                  flush=True)
            print('  ' + ' ' * 12 + '  phases s (sample / no-grad passes / updates): ' + '   '.join(
                f'{side} {" / ".join(f"{x:.2f}" for x in phase[side])}' for side in ('flowrl_nb', 'TRL')), flush=True)
    print('\n| model | variant | s/batch flowrl_nb | s/batch TRL | flowrl_nb/TRL steps/s | tok/s flowrl_nb | tok/s TRL | '
          'flowrl_nb/TRL tok/s | mean length (nb / TRL) |')
    print('|---|---|---|---|---|---|---|---|---|')
    for name, v, tn, tt, kn, kt, ln, lt in rows:
        print(f'| {name} | {v} | {tn:.2f} | {tt:.2f} | {tt / tn:.2f}x | {kn:.1f} | {kt:.1f} | {kn / kt:.2f}x | {ln:.1f} / {lt:.1f} |')


if __name__ == '__main__':
    main()
