"""Peak memory of the reference policy: adapters disabled on the policy itself vs a deep-copied reference model.

    .venv/bin/python bench/reference_memory.py [--size medium|tiny] [--batch 128]
    .venv/bin/python bench/reference_memory.py --size smollm2 --batch 16 --prompt-tokens 64 --completion-tokens 48

Each scenario runs in a fresh Python process and reports its peak resident memory (ru_maxrss) above the
memory measured after imports, before the model is loaded:

* policy            load the policy (LoRA) and do one training step: forward + backward + AdamW on a batch;
* adapter_disabled  the same, preceded by a reference forward with `model.disable_adapter()` under no_grad
                    (what `flowrl_nb.model.reference_logprobs` and the trainer do);
* deepcopy          the same, preceded by a reference forward through `copy.deepcopy(base model)` kept alive
                    for the step (what a trainer with a separate reference model holds).

Goal: the reference adds < 5 % to the policy's peak (adapter_disabled vs policy). The default model is a
synthetic Qwen2 (hidden 512, 8 layers, ~23 M parameters, random weights) so that weights, not the Python runtime,
dominate the numbers; `--size tiny` uses the built-in 2.4 M-parameter model and `--size smollm2` the real
SmolLM2-135M-Instruct (`flowrl_nb.smollm2`; with the preset's shapes, one mini-batch of 16 sequences of about 64 prompt
and 48 completion tokens, the logits of its 49,152-token vocabulary dominate the peak).
"""
import argparse, json, os, resource, subprocess, sys, tempfile
from pathlib import Path

SCENARIOS = ('policy', 'adapter_disabled', 'deepcopy')


def rss_kb() -> int:
    for line in Path('/proc/self/status').read_text().splitlines():
        if line.startswith('VmRSS:'): return int(line.split()[1])
    return 0


def scenario(name, model_path, batch, P=6, T=8):
    import copy, torch
    torch.set_num_threads(1)
    from flowrl_nb.model import load_policy, token_logprobs, reference_logprobs
    torch.zeros(1) @ torch.zeros(1)  # load the math libraries before the baseline
    base_kb = rss_kb()
    model, tok = load_policy(model_path)
    g = torch.Generator().manual_seed(0)
    V = len(tok)
    pi, pm = torch.randint(3, V, (batch, P), generator=g), torch.ones(batch, P, dtype=torch.long)
    ci, cm = torch.randint(3, V, (batch, T), generator=g), torch.ones(batch, T, dtype=torch.long)
    ref_model = None
    if name == 'adapter_disabled':
        reference_logprobs(model, pi, pm, ci, cm)
    elif name == 'deepcopy':
        ref_model = copy.deepcopy(model.get_base_model()).eval()
        with torch.no_grad(): token_logprobs(ref_model, pi, pm, ci, cm)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    model.train()
    out = token_logprobs(model, pi, pm, ci, cm)
    out.logp.sum().backward(); opt.step()
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    params = sum(p.numel() for p in model.parameters())
    return {'scenario': name, 'peak_mb': (peak_kb - base_kb) / 1024, 'params_m': params / 1e6, 'kept_copy': ref_model is not None}


def build_medium(d):
    "A synthetic ~23 M-parameter Qwen2 with the tiny tokenizer, saved like a hub model."
    import torch
    from transformers import Qwen2ForCausalLM
    from flowrl_nb.tiny import build_tokenizer, tiny_config
    torch.manual_seed(0)
    tok = build_tokenizer()
    cfg = tiny_config(tok, hidden_size=512, intermediate_size=1408, num_hidden_layers=8, num_attention_heads=8,
                      num_key_value_heads=2, max_position_embeddings=64)
    Qwen2ForCausalLM(cfg).save_pretrained(d); tok.save_pretrained(d)
    return d


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--size', default='medium', choices=['medium', 'tiny', 'smollm2'])
    ap.add_argument('--prompt-tokens', type=int, default=6)
    ap.add_argument('--completion-tokens', type=int, default=8)
    ap.add_argument('--batch', type=int, default=128, help='sequences per step (default: 16 prompts x 8 samples)')
    ap.add_argument('--scenario', choices=SCENARIOS, help=argparse.SUPPRESS)  # internal: run one scenario
    ap.add_argument('--model', help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.scenario:
        print(json.dumps(scenario(args.scenario, args.model, args.batch, args.prompt_tokens, args.completion_tokens))); return 0
    with tempfile.TemporaryDirectory() as d:
        path = build_medium(d) if args.size == 'medium' else {'tiny': 'tiny', 'smollm2': 'smollm2-135m-instruct'}[args.size]
        res = {}
        for name in SCENARIOS:
            r = subprocess.run([sys.executable, __file__, '--scenario', name, '--model', str(path), '--batch', str(args.batch),
                                '--prompt-tokens', str(args.prompt_tokens), '--completion-tokens', str(args.completion_tokens)],
                               capture_output=True, text=True, env={**os.environ, 'HF_HUB_OFFLINE': '1'})
            if r.returncode: print(r.stderr[-3000:], file=sys.stderr); return 1
            res[name] = json.loads(r.stdout.strip().splitlines()[-1])
    pol = res['policy']['peak_mb']
    print(f'model: {args.size} ({res["policy"]["params_m"]:.1f} M parameters), batch {args.batch} x '
          f'{args.prompt_tokens + args.completion_tokens} tokens; '
          f'peak resident memory above the post-import baseline:')
    for name in SCENARIOS:
        mb = res[name]['peak_mb']
        print(f'  {name:<17} {mb:8.1f} MB   ({100 * (mb - pol) / pol:+6.1f} % vs policy)')
    added = 100 * (res['adapter_disabled']['peak_mb'] - pol) / pol
    print(f'\nadapter-disabled reference adds {added:+.1f} % to the policy\'s peak (goal < 5 %: {"met" if added < 5 else "NOT met"}); '
          f'a deep-copied reference adds {100 * (res["deepcopy"]["peak_mb"] - pol) / pol:+.1f} %')
    return 0


if __name__ == '__main__':
    sys.exit(main())
