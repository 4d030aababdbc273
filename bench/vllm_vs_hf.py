"""Rollout throughput: flowrl_nb's vLLM engine against its HF engine, side by side in one run (a benchmark; issue 16).

    V=$(bash tools/vllm_venv.sh)
    PYTHONPATH=. $V/bin/python bench/vllm_vs_hf.py                         # tiny and SmolLM2, 8 / 32 / 64 sequences per call
    PYTHONPATH=. $V/bin/python bench/vllm_vs_hf.py --models smollm2-135m-instruct --shapes 64 --reps 3

Both engines sample the same prompts (the model's own task: digit sums for tiny, arithmetic word problems for SmolLM2)
with the same rank-16 LoRA adapter on all seven projections (random lora_B, so the LoRA matmuls do real work), at
the same temperature and length limit, through the trainer's own engine classes (`HFRolloutEngine`,
`VLLMRolloutEngine`). They are measured interleaved (HF, vLLM, HF, vLLM, ...), medians of tokens/s over `--reps`,
after one warm-up call each. vLLM is built for GPUs; on a CPU there is no goal, only the crossover to know.
"""
import argparse, os, statistics, sys, time
os.environ.setdefault('VLLM_ENABLE_V1_MULTIPROCESSING', '0'); os.environ.setdefault('VLLM_CPU_KVCACHE_SPACE', '2')
os.environ.setdefault('TOKENIZERS_PARALLELISM', 'false')


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--models', nargs='+', default=['tiny', 'smollm2-135m-instruct'])
    ap.add_argument('--shapes', type=int, nargs='+', default=[8, 32, 64], help='sequences per generate call')
    ap.add_argument('--reps', type=int, default=3)
    ap.add_argument('--threads', type=int, default=2)
    a = ap.parse_args(argv)
    import torch
    torch.set_num_threads(a.threads)
    from flowrl_nb.config import FlowRLConfig
    from flowrl_nb.model import LoraSpec, load_policy, resolve_model_path
    from flowrl_nb.rewards import prompt_text
    from flowrl_nb.rollout import HFRolloutEngine
    from flowrl_nb.task import task_from_config
    from flowrl_nb.vllm_engine import VLLMRolloutEngine
    for name in a.models:
        cfg = FlowRLConfig.preset('smollm2-arith') if name != 'tiny' else FlowRLConfig()
        n, T, temp = cfg.num_generations, cfg.max_completion_length, cfg.temperature
        model, tok = load_policy(name, lora=LoraSpec(r=16, alpha=32))
        with torch.no_grad():
            g = torch.Generator().manual_seed(0)
            for pname, p in model.named_parameters():
                if 'lora_B' in pname: p.copy_(0.01 * torch.randn(p.shape, generator=g))
        rows = task_from_config(cfg).rows()
        prompts = [prompt_text(r['prompt'], tok) for r in rows]
        hf = HFRolloutEngine(model, tok, max_prompt_length=cfg.max_prompt_length)
        vl = VLLMRolloutEngine(resolve_model_path(name), tok, cfg.max_prompt_length, T, 16, dtype='float32',
                               gpu_memory_utilization=None, seed=0)
        vl.sync_weights(model)
        torch.set_num_threads(a.threads)
        print(f'{name}: {n} samples per prompt, <= {T} new tokens, temperature {temp}, LoRA r=16; torch threads {torch.get_num_threads()}')
        for s in a.shapes:
            k = max(s // n, 1)
            ps = (prompts * (k // len(prompts) + 1))[:k]
            for e in (hf, vl): e.generate(ps, n, T, temperature=temp)  # warm-up
            tps = {'hf': [], 'vllm': []}
            for rep in range(a.reps):
                for key, e in (('hf', hf), ('vllm', vl)):
                    torch.manual_seed(rep)
                    t = time.perf_counter(); b = e.generate(ps, n, T, temperature=temp); dt = time.perf_counter() - t
                    tps[key].append(int(b.completion_mask.sum()) / dt)
            h, v = statistics.median(tps['hf']), statistics.median(tps['vllm'])
            print(f'  {k * n:4d} sequences/call ({k} prompts x {n}): HF {h:7.0f} tok/s   vLLM {v:7.0f} tok/s   vLLM/HF {v / h:5.2f}', flush=True)
        vl.close()
        del vl, hf, model
    return 0


if __name__ == '__main__':
    sys.exit(main())
