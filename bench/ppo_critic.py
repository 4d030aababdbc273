"""PPO's critic on the built-in task: how much of the returns its value head explains, per setting, side by side.

    python bench/ppo_critic.py                       # the default and the settings it was chosen against (~4 min on 2 cores)
    python bench/ppo_critic.py --steps 90 --set critic_learning_rate=1e-2 --set critic_learning_rate=3e-3
    python bench/ppo_critic.py --oracle              # the best any critic could do at the start (~1 min)

Each setting is one PPO run of the demo's shape (16 prompts x 8 samples, 2 mini-batches, seed 0, no coverage), one
torch thread. It prints, per block of steps, the critic's explained variance (`critic/vf_explained_var`, measured on
each mini-batch before its update: 0 = no better than the mean return) and the sampled reward, so the settings can be
compared in one run. What it measured is in flowrl_nb.critic ("Choosing the defaults").

`--oracle` estimates the most a critic could explain of the reference policy's returns: for every prompt it samples
512 completions, takes V*(s) = the mean reward of the other sampled completions that share the prefix s (a
leave-one-out Monte-Carlo estimate of the true value), and reports 1 − Var(R − V*)/Var(R) over every sampled token.
"""
import argparse, tempfile, time
import numpy as np, torch


def run(overrides: dict, steps: int, seed: int) -> dict:
    from flowrl_nb.config import FlowRLConfig
    from flowrl_nb.trainer import Trainer
    cfg = FlowRLConfig(algorithm='ppo', max_steps=steps, coverage_steps=0, save_steps=0, seed=seed,
                       output_dir=tempfile.mkdtemp(prefix='ppo_critic-')).replace(**overrides)
    t0 = time.perf_counter()
    hist = Trainer(cfg).train(progress=False)
    return dict(ev=np.array([m['critic/vf_explained_var'] for m in hist]), reward=np.array([m['reward/mean'] for m in hist]),
                seconds=time.perf_counter() - t0)


def oracle(samples: int = 512, seed: int = 0) -> float:
    "Explained variance of the Monte-Carlo value V*(prefix) under the reference policy, over every sampled token."
    import collections
    from flowrl_nb.config import FlowRLConfig
    from flowrl_nb.trainer import Trainer
    from flowrl_nb.rewards import prompt_text
    tr = Trainer(FlowRLConfig(algorithm='ppo', coverage_steps=0, save_steps=0, seed=seed, output_dir=tempfile.mkdtemp(prefix='ppo_critic-')))
    v, r = [], []
    for row in tr.task.rows():
        b = tr.engine.generate([prompt_text(row['prompt'], tr.tokenizer)], samples, tr.config.max_completion_length)
        rewards = tr.task.reward(prompts=[row['prompt']] * samples, completions=b.completions, target=[row['target']] * samples)
        seqs = [(c[:int(sum(m))], x) for c, m, x in zip(b.completion_ids.tolist(), b.completion_mask.tolist(), rewards)]
        by_prefix = collections.defaultdict(list)
        for c, x in seqs:
            for t in range(len(c)): by_prefix[tuple(c[:t])].append(x)
        for c, x in seqs:  # leave-one-out: the sample's own reward never enters its value (a prefix seen once is skipped)
            for t in range(len(c)):
                others = by_prefix[tuple(c[:t])]
                if len(others) > 1: v.append((sum(others) - x) / (len(others) - 1)); r.append(x)
    v, r = np.array(v), np.array(r, dtype=float)
    return 1 - np.var(r - v) / np.var(r)


def main():
    from flowrl_nb.config import FlowRLConfig
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--steps', type=int, default=90, help='steps per run (default 90, the demo\'s)')
    p.add_argument('--block', type=int, default=15, help='steps per reported block (default 15)')
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--oracle', action='store_true', help='only the best explained variance any critic could reach at the start')
    p.add_argument('--set', action='append', metavar='KEY=VALUE[,KEY=VALUE]',
                   help='one setting to run (repeatable); default: the defaults, critic lr 1e-2 and 1e-3, and a shared body')
    a = p.parse_args()
    torch.set_num_threads(1)
    if a.oracle:
        print(f'the reference policy, every prompt x 512 samples: a Monte-Carlo oracle critic explains {oracle(seed=a.seed):.3f} '
              f'of the returns\' variance (the most any critic could at the start)'); return
    sets = a.set or ['', 'critic_learning_rate=1e-2', 'critic_learning_rate=1e-3', 'value_detach=false']
    settings = {s or 'defaults': {k: FlowRLConfig.coerce(k, v) for k, v in (kv.split('=', 1) for kv in s.split(',') if kv)}
                for s in sets}
    print(f'PPO on the built-in task, {a.steps} steps, seed {a.seed}; defaults: critic_learning_rate='
          f'{FlowRLConfig().critic_learning_rate:g}, value_detach={FlowRLConfig().value_detach}, value_num_layers='
          f'{FlowRLConfig().value_num_layers}; explained variance per block of {a.block} steps: mean (min, max)', flush=True)
    for name, o in settings.items():
        r = run(o, a.steps, a.seed)
        blocks = [(i, r['ev'][i:i + a.block], r['reward'][i:i + a.block]) for i in range(0, a.steps, a.block)]
        cells = '  '.join(f'{i + 1}-{i + len(e)}: {e.mean():+.3f} ({e.min():+.3f}, {e.max():+.3f})' for i, e, _ in blocks)
        print(f'{name:>30}: {cells}', flush=True)
        print(f'{"":>30}  sampled reward by block: ' + ', '.join(f'{x.mean():.3f}' for _, _, x in blocks)
              + f'; {r["seconds"]:.0f} s', flush=True)


if __name__ == '__main__':
    main()
