"Policy loading, one-pass log-probs / log Z, the adapters-off reference and adapter + Z head saving (`flowrl_nb.model`)."
import json, subprocess, sys
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings, HealthCheck, strategies as st

from flowrl_nb.model import (LoraSpec, LogProbOut, load_policy, token_logprobs, reference_logprobs, make_z_head,
                             save_adapter_and_z, load_z_head, resolve_model_path, sequence_inputs, eval_mode)
from flowrl_nb.partition import ProjZ, pool_prompt
from flowrl_nb.tiny import tiny_model_path

torch.set_num_threads(1)
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope='module')
def base():
    "The built-in tiny model's directory (a Qwen2 with a 16-token character tokenizer)."
    return str(tiny_model_path())


def perturb(model, seed=0, std=0.05):
    "Give the LoRA B matrices non-zero values so the policy differs from the reference."
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if 'lora_B' in n: p.copy_(torch.randn(p.shape, generator=g) * std)
    return model


@pytest.fixture(scope='module')
def policy(base):
    model, tok = load_policy(base, lora=LoraSpec(r=4))
    return perturb(model).eval(), tok


def make_batch(prompts, completions, pad_id):
    P, T = max(map(len, prompts)), max(map(len, completions))
    pi = torch.tensor([[pad_id] * (P - len(p)) + p for p in prompts])
    pm = torch.tensor([[0] * (P - len(p)) + [1] * len(p) for p in prompts])
    ci = torch.tensor([c + [pad_id] * (T - len(c)) for c in completions])
    cm = torch.tensor([[1] * len(c) + [0] * (T - len(c)) for c in completions])
    return pi, pm, ci, cm


def manual(model, prompt, completion, temperature=1.0):
    "log-probs and entropies of each completion token, one unpadded sequence, full forward."
    logits = model(input_ids=torch.tensor([prompt + completion])).logits[0].double() / temperature
    lp = logits.log_softmax(-1)[len(prompt) - 1:-1]
    ent = -(lp.exp() * lp).sum(-1)
    return lp.gather(-1, torch.tensor(completion)[:, None]).squeeze(-1), ent


def random_batch(tok, seed, B=4):
    g = torch.Generator().manual_seed(seed)
    vocab = [i for i in range(len(tok)) if i not in (tok.pad_token_id,)]
    pick = lambda k: [vocab[int(i)] for i in torch.randint(len(vocab), (k,), generator=g)]
    prompts = [pick(int(torch.randint(1, 8, (1,), generator=g))) for _ in range(B)]
    completions = [pick(int(torch.randint(1, 7, (1,), generator=g))) for _ in range(B)]
    return prompts, completions


# --- import hygiene -------------------------------------------------------------------------------------------------
def test_import_does_not_import_bitsandbytes():
    code = "import sys, flowrl_nb.model; print('bitsandbytes' in sys.modules, 'peft' in sys.modules)"
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, cwd=REPO, check=True).stdout.split()
    assert out == ['False', 'False']


def test_missing_bitsandbytes_error(base):
    code = (f"import sys; sys.modules['bitsandbytes'] = None\nfrom flowrl_nb.model import load_policy\n"
            f"try: load_policy({base!r}, quantization='4bit')\nexcept ImportError as e: print('ERR', e)")
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, cwd=REPO, check=True).stdout
    assert "ERR quantization='4bit' needs bitsandbytes" in out and 'pip install "flowrl_nb[quant]"' in out


def test_bnb_kernels_notice_is_dropped_and_nothing_else(base):
    # on AVX-512 BF16 CPUs, importing bitsandbytes without the optional `kernels` package logs a notice we filter out
    code = (f"import logging\nfrom flowrl_nb.model import load_policy\nload_policy({base!r}, quantization='4bit', device='cpu')\n"
            "logging.getLogger('bitsandbytes.backends.cpu.ops').warning('another bitsandbytes warning')")
    err = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, cwd=REPO, check=True).stderr
    assert 'gemm_4bit_forward' not in err and 'another bitsandbytes warning' in err


# --- inputs ---------------------------------------------------------------------------------------------------------
def test_resolve_model_path(base, tmp_path, monkeypatch):
    assert resolve_model_path(base) == base == resolve_model_path('tiny')
    monkeypatch.setenv('HF_HUB_OFFLINE', '1')
    with pytest.raises(FileNotFoundError, match='hub downloads are impossible offline'): resolve_model_path('org/model')
    with pytest.raises(FileNotFoundError, match=str(tmp_path / 'nope')): resolve_model_path(tmp_path / 'nope')
    with pytest.raises(FileNotFoundError, match='has no config.json'): resolve_model_path(tmp_path)
    monkeypatch.delenv('HF_HUB_OFFLINE'); monkeypatch.delenv('TRANSFORMERS_OFFLINE', raising=False)
    assert resolve_model_path('org/model') == 'org/model'  # a hub id when online
    with pytest.raises(FileNotFoundError, match='looks like a local path'): resolve_model_path('./no/such/dir')


def test_load_policy_validation(base):
    with pytest.raises(ValueError, match='did you mean "8bit"'): load_policy(base, quantization='8bits')
    with pytest.raises(ValueError, match='dtype must be one of'): load_policy(base, dtype='float64')
    with pytest.raises(ValueError, match='unknown lora field'): load_policy(base, lora={'rank': 8})
    with pytest.raises(ValueError, match='adapter is required'): load_policy(base, lora=None)


def test_load_policy_dtype_and_lora_dict(base):
    model, tok = load_policy(base, lora={'r': 2, 'target_modules': ['q_proj', 'v_proj']}, dtype='bfloat16')
    assert next(model.get_base_model().parameters()).dtype == torch.bfloat16
    assert model.peft_config['default'].r == 2 and set(model.peft_config['default'].target_modules) == {'q_proj', 'v_proj'}
    assert tok.padding_side == 'left' and tok.pad_token_id is not None
    assert all('lora_' in n for n, p in model.named_parameters() if p.requires_grad)
    pi, pm, ci, cm = make_batch([[5, 6, 7]], [[8, 9]], tok.pad_token_id)
    out = token_logprobs(model, pi, pm, ci, cm)
    assert out.logp.dtype == torch.float32 and torch.isfinite(out.logp).all()  # bf16 weights, fp32 log-probs


def test_token_logprobs_validation(policy):
    model, tok = policy
    pi, pm, ci, cm = make_batch([[5, 6]], [[8]], tok.pad_token_id)
    with pytest.raises(ValueError, match='completion_mask shape'): token_logprobs(model, pi, pm, ci, cm[:, :0])
    with pytest.raises(ValueError, match='prompt_ids has 1 rows but completion_ids has 2'):
        token_logprobs(model, pi, pm, ci.repeat(2, 1), cm.repeat(2, 1))
    with pytest.raises(ValueError, match='temperature must be > 0'): token_logprobs(model, pi, pm, ci, cm, temperature=0)


# --- log-probs ------------------------------------------------------------------------------------------------------
@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 10_000), temperature=st.sampled_from([1.0, 0.7, 1.3]))
def test_logprobs_match_unpadded_per_sequence(policy, seed, temperature):
    model, tok = policy
    prompts, completions = random_batch(tok, seed)
    batch = make_batch(prompts, completions, tok.pad_token_id)
    with torch.no_grad():
        out = token_logprobs(model, *batch, temperature=temperature, with_entropy=True)
        for i, (p, c) in enumerate(zip(prompts, completions)):
            lp, ent = manual(model, p, c, temperature)
            # float32 rounding differs between a padded batch and one sequence, and grows with |log π|: measured up to
            # 1.2e-5 at log π ≈ -10 (a relative 1.2e-6), so a relative tolerance on top of the absolute one
            torch.testing.assert_close(out.logp[i, :len(c)].double(), lp, atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(out.entropy[i, :len(c)].double(), ent, atol=1e-5, rtol=1e-5)
            assert (out.logp[i, len(c):] == 0).all() and (out.entropy[i, len(c):] == 0).all()


def test_float_masks_and_position_ids(policy):
    model, tok = policy
    batch = make_batch([[5, 6, 7, 8], [9]], [[10, 11], [12, 13, 14]], tok.pad_token_id)
    ids, am, pos = sequence_inputs(*batch)
    assert pos[1].tolist() == [0, 0, 0, 0, 1, 2, 3] and pos[0].tolist() == [0, 1, 2, 3, 4, 5, 5]
    a = token_logprobs(model, *batch).logp
    b = token_logprobs(model, batch[0], batch[1].float(), batch[2], batch[3].float()).logp
    torch.testing.assert_close(a, b)


def test_without_logits_to_keep_same_result(policy, monkeypatch):
    model, tok = policy
    batch = make_batch(*random_batch(tok, 3), tok.pad_token_id)
    z = make_z_head(model, dropout=0.0).eval()
    a = token_logprobs(model, *batch, z_head=z)
    import flowrl_nb.model as M
    monkeypatch.setattr(M, '_takes_logits_to_keep', lambda m: False)
    b = token_logprobs(model, *batch, z_head=z)
    torch.testing.assert_close(a.logp, b.logp); torch.testing.assert_close(a.log_z, b.log_z)


def test_gradient_checkpointing_same_values_and_grads(base):
    batch = None
    res = []
    for gc in (False, True):
        torch.manual_seed(0)  # same LoRA A init in both models
        model, tok = load_policy(base, gradient_checkpointing=gc)
        perturb(model).train()
        batch = batch or make_batch(*random_batch(tok, 5), tok.pad_token_id)
        z = make_z_head(model, dropout=0.0)
        torch.manual_seed(0); z = ProjZ(z.hidden_size, 3, 0.0)
        out = token_logprobs(model, *batch, z_head=z)
        (out.logp.sum() + out.log_z.sum()).backward()
        res.append((out.logp.detach(), [p.grad.clone() for n, p in model.named_parameters() if p.requires_grad]))
    torch.testing.assert_close(res[0][0], res[1][0])
    for g0, g1 in zip(res[0][1], res[1][1]): torch.testing.assert_close(g0, g1, atol=1e-5, rtol=1e-4)


# --- log Z ----------------------------------------------------------------------------------------------------------
def test_log_z_from_last_hidden_state_and_exclude_last(policy):
    model, tok = policy
    batch = make_batch([[5, 6, 7, 8], [9, 10]], [[10, 11], [12]], tok.pad_token_id)
    z = make_z_head(model, num_layers=2, dropout=0.0).eval()
    ids, am, pos = sequence_inputs(*batch)
    with torch.no_grad():
        h = model(input_ids=ids, attention_mask=am, position_ids=pos, output_hidden_states=True).hidden_states[-1][:, :4]
        for ex in (False, True):
            torch.testing.assert_close(token_logprobs(model, *batch, z_head=z, exclude_last=ex).log_z,
                                       z(pool_prompt(h.float(), batch[1], ex)))
        assert not torch.allclose(token_logprobs(model, *batch, z_head=z).log_z,
                                  token_logprobs(model, *batch, z_head=z, exclude_last=True).log_z)


def test_log_z_gradient_paths(policy):
    model, tok = policy
    batch = make_batch([[5, 6, 7], [9]], [[10, 11], [12]], tok.pad_token_id)
    z = make_z_head(model, dropout=0.0)
    lora = [p for n, p in model.named_parameters() if 'lora_' in n]
    for detach in (False, True):
        out = token_logprobs(model, *batch, z_head=z, z_detach=detach)
        assert out.log_z.dtype == torch.float32 and out.log_z.shape == (2,)
        grads = torch.autograd.grad(out.log_z.sum(), lora + list(z.parameters()), allow_unused=True)
        lora_g = sum(float(g.abs().sum()) for g in grads[:len(lora)] if g is not None)
        assert (lora_g == 0) == detach
        assert all(g is not None and g.abs().sum() > 0 for g in grads[len(lora):][-2:])


def test_make_z_head_from_config(policy):
    model, _ = policy
    class Cfg: z_num_layers, z_dropout = 2, 0.2
    z = make_z_head(model, Cfg())
    assert (z.num_layers, z.dropout, z.hidden_size) == (2, 0.2, model.config.hidden_size)
    assert all(p.dtype == torch.float32 for p in z.parameters())
    assert not any('net.' in n for n, _ in model.named_parameters())  # never part of the PeftModel


# --- reference ------------------------------------------------------------------------------------------------------
def test_reference_equals_policy_at_init_and_differs_after(base):
    model, tok = load_policy(base)
    batch = make_batch(*random_batch(tok, 7), tok.pad_token_id)
    model.train()
    pol = token_logprobs(model, *batch).logp.detach()
    ref = reference_logprobs(model, *batch)
    assert not ref.requires_grad and model.training  # no graph, mode restored
    torch.testing.assert_close(ref, pol, atol=1e-6, rtol=0)
    perturb(model)
    ref2 = reference_logprobs(model, *batch)
    torch.testing.assert_close(ref2, ref, atol=1e-6, rtol=0)  # the reference does not move with the adapter
    assert (token_logprobs(model, *batch).logp.detach() - ref2).abs().max() > 1e-3
    with pytest.raises(TypeError, match='needs a peft.PeftModel'): reference_logprobs(model.get_base_model(), *batch)


def test_eval_mode_restores_mixed_modes(policy):
    model, _ = policy
    model.train(); model.get_base_model().lm_head.eval()
    with eval_mode(model): assert not any(m.training for m in model.modules())
    assert model.training and not model.get_base_model().lm_head.training
    model.eval()


# --- QLoRA ----------------------------------------------------------------------------------------------------------
def test_qlora_4bit_on_cpu(base):
    import bitsandbytes as bnb
    model, tok = load_policy(base, quantization='4bit', device='cpu')
    assert any(isinstance(m, bnb.nn.Linear4bit) for m in model.modules())
    batch = make_batch(*random_batch(tok, 11), tok.pad_token_id)
    ref0 = reference_logprobs(model, *batch)  # eval + no_grad forward first: the bitsandbytes repacking trap
    model.train()
    z = make_z_head(model, dropout=0.0)
    out = token_logprobs(model, *batch, z_head=z)
    torch.testing.assert_close(out.logp.detach(), ref0, atol=1e-5, rtol=0)  # fresh adapter: policy == reference
    (out.logp.sum() + out.log_z.sum()).backward()
    grads = {n: p.grad for n, p in model.named_parameters() if 'lora_' in n}
    assert all(g is not None and torch.isfinite(g).all() for g in grads.values())
    assert all(float(g.abs().sum()) > 0 for n, g in grads.items() if 'lora_B' in n)  # (A's grad is 0 while B = 0)
    perturb(model)
    torch.testing.assert_close(reference_logprobs(model, *batch), ref0)
    assert (token_logprobs(model, *batch).logp.detach() - ref0).abs().max() > 1e-3


def test_8bit_loads_and_trains(base):
    model, tok = load_policy(base, quantization='8bit', device='cpu')
    batch = make_batch([[5, 6, 7]], [[8, 9]], tok.pad_token_id)
    model.train()
    out = token_logprobs(model, *batch)
    out.logp.sum().backward()
    assert any(p.grad is not None for n, p in model.named_parameters() if 'lora_' in n)
    with eval_mode(model), torch.no_grad():  # int8 matmuls differ between train and eval mode on CPU (~1e-3)
        torch.testing.assert_close(reference_logprobs(model, *batch), token_logprobs(model, *batch).logp, atol=1e-5, rtol=0)


# --- saving ---------------------------------------------------------------------------------------------------------
def test_save_and_load_with_plain_peft(policy, base, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM
    model, tok = policy
    z = make_z_head(model, num_layers=2, dropout=0.1)
    out = save_adapter_and_z(model, z, tmp_path / 'ckpt')
    cfg = json.loads((out / 'adapter_config.json').read_text())
    assert cfg['r'] == 4 and cfg['peft_type'] == 'LORA'
    assert json.loads((out / 'z_head.json').read_text()) == {'class': 'flowrl_nb.partition.ProjZ', 'hidden_size': z.hidden_size,
                                                              'num_layers': 2, 'dropout': 0.1}
    plain = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base), str(out)).eval()
    batch = make_batch(*random_batch(tok, 13), tok.pad_token_id)
    with torch.no_grad():
        torch.testing.assert_close(token_logprobs(plain, *batch).logp, token_logprobs(model, *batch).logp, atol=1e-6, rtol=0)
    z2 = load_z_head(out / 'z_head.safetensors')
    assert isinstance(z2, ProjZ) and (z2.num_layers, z2.dropout) == (2, 0.1)
    for (k, a), (k2, b) in zip(z.state_dict().items(), z2.state_dict().items()):
        assert k == k2 and torch.equal(a, b)


def test_save_without_z_head(policy, tmp_path):
    model, _ = policy
    out = save_adapter_and_z(model, None, tmp_path / 'grpo')
    assert (out / 'adapter_model.safetensors').exists() and not (out / 'z_head.json').exists()
    with pytest.raises(FileNotFoundError, match='no Z head in'): load_z_head(out)
