"""Smoke run (issue 16 groundwork): 3 steps of the smollm2-arith preset with rollout_engine="vllm", in the vLLM venv:
    V=$(bash tools/vllm_venv.sh) && PYTHONPATH=$PWD $V/bin/python bench/vllm_train_smoke.py [flowrl|grpo]
"""
import os, sys, time, tempfile
os.environ.setdefault('VLLM_ENABLE_V1_MULTIPROCESSING', '0'); os.environ.setdefault('VLLM_CPU_KVCACHE_SPACE', '2')
import torch
torch.set_num_threads(2)
from flowrl_nb.config import FlowRLConfig
from flowrl_nb.trainer import Trainer
algo = sys.argv[1] if len(sys.argv) > 1 else 'flowrl'
out = tempfile.mkdtemp()
cfg = FlowRLConfig.preset('smollm2-arith', algorithm=algo, rollout_engine='vllm', max_steps=3, eval_steps=0, save_steps=2,
                          output_dir=f'{out}/run')
tr = Trainer(cfg)
print('engine', type(tr.engine).__name__, 'threads after engine', torch.get_num_threads())
for s in range(3):
    t0 = time.time(); m = tr.train_step(last=s == 2)
    print(f"step {tr.step_count}: {time.time()-t0:.1f}s reward {m['reward/mean']:.3f} loss {m['actor/final_loss']:.3f} "
          f"len {m['completion/mean_length']:.1f} sample {m['time/sample']:.1f}s versions {tr.engine.versions} "
          + ' '.join(f'{k}={v:.3g}' for k, v in m.items() if ('tis' in k or 'rollout' in k or 'old' in k) and isinstance(v, float)))
print(sorted(os.listdir(f'{out}/run')), sorted(os.listdir(tr.engine.adapter_dir)))
tr.engine.close()
