"""PPO's critic on the built-in task: how much of the returns its value head explains, per setting, side by side.

    python bench/ppo_critic.py                       # the default and the settings it was chosen against (~4 min on 2 cores)
    python bench/ppo_critic.py --steps 90 --set critic_learning_rate=1e-2 --set critic_learning_rate=3e-3
    python bench/ppo_critic.py --room                # how much there is to explain, at the start and after 90 steps (~3 min)

Each setting is one PPO run of the demo's shape (16 prompts x 8 samples, 2 mini-batches, seed 0, no coverage), one
torch thread. It prints, per block of steps, the critic's explained variance (`critic/vf_explained_var`, measured on
each mini-batch before its update: 0 = no better than the mean return) and the sampled reward, so the settings can be
compared in one run. What it measured is in flowrl_nb.critic ("Choosing the defaults").

`--room` measures how much there is to explain, at the start and after `--steps` PPO steps: for every prompt it samples
512 completions, takes V*(s) = the mean reward of the other sampled completions that share the prefix s (a
leave-one-out Monte-Carlo estimate of the true value) and reports 1 − Var(R − V*)/Var(R) over every sampled token; and
it fits a fresh value head offline to the same tokens' hidden states, to show whether the features carry the value.
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


def samples(tr, n:int=512):
    "Per prompt of the task, `n` completions of the trainer's policy: [(hidden states at each completion token (n,T,H) with mask, rewards, ids)]."
    from flowrl_nb.model import token_logprobs
    from flowrl_nb.rewards import prompt_text
    out = []
    for row in tr.task.rows():
        b = tr.engine.generate([prompt_text(row['prompt'], tr.tokenizer)], n, tr.config.max_completion_length)
        rewards = tr.task.reward(prompts=[row['prompt']] * n, completions=b.completions, target=[row['target']] * n)
        cap = {}
        hook = tr.model.get_decoder().register_forward_hook(lambda m, a, o: cap.__setitem__('h', o[0]))
        with torch.no_grad(): token_logprobs(tr.model, b.prompt_ids, b.prompt_mask, b.completion_ids, b.completion_mask.float())
        hook.remove()
        P, T = b.prompt_ids.shape[1], b.completion_ids.shape[1]
        out.append((cap['h'][:, P - 1:P + T - 1].float(), b.completion_mask.bool(), rewards, b.completion_ids.tolist()))
    return out


def oracle(data) -> float:
    "Explained variance of the Monte-Carlo value V*(prefix) (leave-one-out over the samples sharing the prefix), over every sampled token."
    import collections
    v, r = [], []
    for _, mask, rewards, ids in data:
        seqs = [(c[:int(m.sum())], x) for c, m, x in zip(ids, mask, rewards)]
        by_prefix = collections.defaultdict(list)
        for c, x in seqs:
            for t in range(len(c)): by_prefix[tuple(c[:t])].append(x)
        for c, x in seqs:  # leave-one-out: the sample's own reward never enters its value (a prefix seen once is skipped)
            for t in range(len(c)):
                others = by_prefix[tuple(c[:t])]
                if len(others) > 1: v.append((sum(others) - x) / (len(others) - 1)); r.append(x)
    v, r = np.array(v), np.array(r, dtype=float)
    return 1 - np.var(r - v) / np.var(r)


def offline_fit(data, steps:int=500, lr:float=1e-3, seed:int=0) -> tuple:
    "A fresh ValueHead fitted by full-batch AdamW to two thirds of the sampled tokens: (train, held-out) explained variance."
    from flowrl_nb.critic import ValueHead
    H = torch.cat([h[m] for h, m, _, _ in data]); R = torch.cat([torch.tensor(x, dtype=torch.float)[:, None].expand_as(m)[m] for _, m, x, _ in data])
    g = torch.Generator().manual_seed(seed); idx = torch.randperm(len(R), generator=g); tr_, te = idx[:len(R) * 2 // 3], idx[len(R) * 2 // 3:]
    torch.manual_seed(seed); head = ValueHead(H.shape[1]); opt = torch.optim.AdamW(head.parameters(), lr=lr)
    for _ in range(steps):
        loss = ((head(H[tr_][None])[0] - R[tr_])**2).mean(); opt.zero_grad(); loss.backward(); opt.step()
    with torch.no_grad(): train, held_out = (float(1 - (R[i] - head(H[i][None])[0]).var() / R[i].var()) for i in (tr_, te))
    return train, held_out


def critic_room(steps:int, seed:int) -> str:
    "How much a critic could explain at the start and after `steps` PPO steps, and what a head on the same features reaches offline."
    from flowrl_nb.config import FlowRLConfig
    from flowrl_nb.trainer import Trainer
    tr = Trainer(FlowRLConfig(algorithm='ppo', coverage_steps=0, save_steps=0, seed=seed, output_dir=tempfile.mkdtemp(prefix='ppo_critic-')))
    lines = []
    for when in ('start (the reference)', f'after {steps} PPO steps'):
        if when.startswith('after'): tr.train(steps, progress=False)
        data = samples(tr)
        fit = offline_fit(data)
        lines.append(f'{when}: a Monte-Carlo oracle explains {oracle(data):.3f} of the return variance; a fresh value head on the '
                     f'policy\'s hidden states, fitted offline (500 full-batch steps, lr 1e-3), explains {fit[1]:.3f} of held-out '
                     f'tokens ({fit[0]:.3f} of its training tokens)')
    return '\n'.join(lines)


def main():
    from flowrl_nb.config import FlowRLConfig
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--steps', type=int, default=90, help='steps per run (default 90, the demo\'s)')
    p.add_argument('--block', type=int, default=15, help='steps per reported block (default 15)')
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--room', action='store_true', help='only how much a critic could explain, at the start and after --steps steps')
    p.add_argument('--set', action='append', metavar='KEY=VALUE[,KEY=VALUE]',
                   help='one setting to run (repeatable); default: the defaults, critic lr 3e-3 and 1e-2, and a shared body')
    a = p.parse_args()
    torch.set_num_threads(1)
    if a.room: print(critic_room(a.steps, a.seed)); return
    sets = a.set or ['', 'critic_learning_rate=3e-3', 'critic_learning_rate=1e-2', 'critic_detach=false']
    settings = {s or 'defaults': {k: FlowRLConfig.coerce(k, v) for k, v in (kv.split('=', 1) for kv in s.split(',') if kv)}
                for s in sets}
    print(f'PPO on the built-in task, {a.steps} steps, seed {a.seed}; defaults: critic_learning_rate='
          f'{FlowRLConfig().critic_learning_rate:g}, critic_detach={FlowRLConfig().critic_detach}, critic_num_layers='
          f'{FlowRLConfig().critic_num_layers}; explained variance per block of {a.block} steps: mean (min, max)', flush=True)
    for name, o in settings.items():
        r = run(o, a.steps, a.seed)
        blocks = [(i, r['ev'][i:i + a.block], r['reward'][i:i + a.block]) for i in range(0, a.steps, a.block)]
        cells = '  '.join(f'{i + 1}-{i + len(e)}: {e.mean():+.3f} ({e.min():+.3f}, {e.max():+.3f})' for i, e, _ in blocks)
        print(f'{name:>30}: {cells}', flush=True)
        print(f'{"":>30}  sampled reward by block: ' + ', '.join(f'{x.mean():.3f}' for _, _, x in blocks)
              + f'; {r["seconds"]:.0f} s', flush=True)


if __name__ == '__main__':
    main()
