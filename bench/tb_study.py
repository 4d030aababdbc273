"""Issue 21's study: tune exact trajectory balance as its own objective on the exact digit-sum task, then measure the
best settings against FlowRL as released, GRPO and REINFORCE++ over five seeds.

    python bench/tb_study.py search [--only NAME ...]   # phase 1: the search, 90 steps, seed 0 (a few on seed 1 too)
    python bench/tb_study.py seeds  [--settings A,B]     # phase 2: 5 seeds x the chosen settings, 300 steps
    python bench/tb_study.py show                        # print what the ledger holds

Every run is one `compare` call from the demo's base config (`demo_config()`: exact coverage every 30 steps, so a
300-step run is measured at 90 and at 300; the learning rate is constant, warmup_steps=0). Each finished run is added
to the ledger at once (atomically), so an interrupted study picks up where it stopped. The ledger,
nbs/explanations/tb_study.json, is what the explanation page (nbs/explanations/02_when_does_flowrl_match.ipynb) reads.
One process, one torch thread: run it under `nice` on a shared machine.
"""
import argparse, json, os, sys, time
from pathlib import Path

os.environ.setdefault('OMP_NUM_THREADS', '1')
import torch

ROOT = Path(__file__).resolve().parents[1]
LEDGER = ROOT / 'nbs' / 'explanations' / 'tb_study.json'
TB = dict(algorithm='flowrl', reward_form='raw', length_norm='sum')  # exact trajectory balance

def tb(beta=15.0, lr=1e-3, zlr=1e-2, mb=2, z_init='default', **kw):
    "Overrides of one exact-TB setting."
    return dict(TB, beta=beta, learning_rate=lr, z_learning_rate=zlr, num_mini_batches=mb, z_init=z_init, **kw)

# phase 1: (name, overrides, seeds). The first line is the setting the explanation page ran before this study.
SEARCH = [
    ('tb b15 lr1e-3 zlr1e-2', tb(), (0,)),
    ('tb b15 lr1e-3 zlr1e-1', tb(zlr=1e-1), (0,)),
    ('tb b15 lr3e-3 zlr1e-1', tb(lr=3e-3, zlr=1e-1), (0,)),
    ('tb b15 lr1e-3 zlr1', tb(zlr=1.0), (0,)),
    ('tb b15 lr1e-3 zlr1e-1 first_batch', tb(zlr=1e-1, z_init='first_batch'), (0,)),
    ('tb b15 lr1e-3 zlr1e-2 first_batch', tb(zlr=1e-2, z_init='first_batch'), (0,)),
    ('tb b15 lr5e-4 zlr1e-1', tb(lr=5e-4, zlr=1e-1), (0,)),
    ('tb b15 lr2e-3 zlr1e-1', tb(lr=2e-3, zlr=1e-1), (0,)),
    ('tb b15 lr1e-3 zlr1e-1 mb4', tb(zlr=1e-1, mb=4), (0,)),
    ('tb b30 lr1e-3 zlr1e-1', tb(beta=30.0, zlr=1e-1), (0,)),
    ('tb b10 lr1e-3 zlr1e-1', tb(beta=10.0, zlr=1e-1), (0,)),
    ('tb b5 lr1e-3 zlr1e-1', tb(beta=5.0, zlr=1e-1), (0,)),
    ('tb b15 lr1e-3 zlr3e-2', tb(zlr=3e-2), (0,)),
    ('tb b15 lr1e-3 zlr1e-1 zdrop0', tb(zlr=1e-1, z_dropout=0.0), (0,)),
]
# phase 2: the settings measured over five seeds at 300 steps (chosen from phase 1; see the explanation page)
SEEDS = (0, 1, 2, 3, 4)
SETTINGS = {
    'flowrl-tb': tb(beta=10.0, zlr=1e-1),   # = PRESETS['flowrl-tb'] (flowrl_nb.config)
    'tb b15': tb(zlr=1e-1),
    'flowrl (released)': dict(algorithm='flowrl'),
    'grpo': dict(algorithm='grpo'),
    'reinforce_pp': dict(algorithm='reinforce_pp'),
}
SEED_STEPS = 300


def load_ledger() -> dict:
    return json.loads(LEDGER.read_text()) if LEDGER.exists() else {'search': [], 'seeds': []}


def save_ledger(led:dict):
    from flowrl_nb.core import atomic_write_json
    atomic_write_json(LEDGER, led, indent=1)


def run_one(name:str, overrides:dict, seed:int, steps:int, out:Path) -> dict:
    "Train one run with `compare` and return its ledger record."
    from flowrl_nb.experiments import compare, demo_config
    from flowrl_nb.sweep import trajectory
    key = f'{name} seed={seed}'
    t = time.perf_counter()
    cmp = compare(demo_config(), runs={key: {**overrides, 'seed': seed}}, steps=steps, out_dir=out / key.replace(' ', '_'),
                  workers=1)
    return dict(setting=name, seed=seed, overrides=overrides, steps=steps, seconds=round(time.perf_counter() - t, 1),
                trajectory=[{k: (round(v, 5) if isinstance(v, float) else v) for k, v in p.items()}
                            for p in trajectory(cmp.histories[key])],
                target_effective_modes=cmp.summary['target_effective_modes'])


def run_phase(phase:str, todo:list, steps:int, out:Path):
    led = load_ledger()
    done = {(r['setting'], r['seed']) for r in led[phase]}
    for name, overrides, seed in todo:
        if (name, seed) in done: continue
        rec = run_one(name, overrides, seed, steps, out / phase)
        led = load_ledger(); led[phase].append(rec); save_ledger(led)
        f = rec['trajectory'][-1]
        print(f"{phase}: {name} seed={seed}: {rec['seconds']:.0f}s  V {f['coverage/correct_mass']:.3f}  "
              f"KL {f['coverage/kl_pi_target_inf']:.3f}  modes {f['coverage/effective_modes']:.2f}  "
              f"solved {f['coverage/prompts_solved_frac']:.2f}", flush=True)


def show():
    led = load_ledger()
    for phase in ('search', 'seeds'):
        for r in led[phase]:
            for p in r['trajectory'][1:]:
                if p['step'] in (90, r['steps']) or phase == 'search' and p['step'] == r['steps']:
                    print(f"{phase:6} {r['setting']:45} seed {r['seed']} step {p['step']:3}: V {p['coverage/correct_mass']:.3f} "
                          f"KL {p['coverage/kl_pi_target_inf']:.3f} modes {p['coverage/effective_modes']:.2f}")


if __name__ == '__main__':
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('phase', choices=('search', 'seeds', 'show'))
    ap.add_argument('--only', nargs='*', help='search: only these setting names')
    ap.add_argument('--settings', help='seeds: comma-separated setting names (default: all of SETTINGS)')
    ap.add_argument('--seeds', default=','.join(map(str, SEEDS)))
    ap.add_argument('--out', default=str(ROOT / 'runs' / 'tb_study'), help='where the run folders go (not committed)')
    a = ap.parse_args()
    torch.set_num_threads(1)
    from transformers.utils import logging as hf_logging
    hf_logging.disable_progress_bar()
    if a.phase == 'show': show(); sys.exit()
    if a.phase == 'search':
        todo = [(n, o, s) for n, o, ss in SEARCH for s in ss if not a.only or n in a.only]
        run_phase('search', todo, 90, Path(a.out))
    else:
        names = a.settings.split(',') if a.settings else list(SETTINGS)
        unknown = [n for n in names if n not in SETTINGS]
        if unknown: sys.exit(f'unknown settings {unknown}: choose from {list(SETTINGS)}')
        seeds = [int(s) for s in a.seeds.split(',')]
        run_phase('seeds', [(n, SETTINGS[n], s) for s in seeds for n in names], SEED_STEPS, Path(a.out))
