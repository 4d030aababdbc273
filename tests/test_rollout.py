"Rollout batches and the Hugging Face sampling engine (`flowrl_nb.rollout`)."
import pytest
import torch

from flowrl_nb.model import load_policy, token_logprobs
from flowrl_nb.rollout import RolloutBatch, RolloutEngine, HFRolloutEngine
from flowrl_nb.tiny import tiny_model_path

torch.set_num_threads(1)
PROMPTS = ['S=13:', 'S=5:', 'S=18:', 'S=7:', 'S=10:']


@pytest.fixture(scope='module')
def base():
    "The built-in tiny model's directory (a Qwen2 with a 16-token character tokenizer)."
    return str(tiny_model_path())


@pytest.fixture(scope='module')
def policy(base):
    torch.manual_seed(0)
    model, tok = load_policy(base)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():  # a non-trivial adapter: samples must come from the policy, not the base
        for n, p in model.named_parameters():
            if 'lora_B' in n: p.copy_(torch.randn(p.shape, generator=g) * 0.05)
    return model, tok


@pytest.fixture(scope='module')
def engine(policy):
    model, tok = policy
    return HFRolloutEngine(model, tok, max_prompt_length=16)


def teacher_forced(model, b, temperature):
    with torch.no_grad():
        was = model.training; model.eval()
        lp = token_logprobs(model, b.prompt_ids, b.prompt_mask, b.completion_ids, b.completion_mask, temperature).logp
        model.train(was)
    return lp


def check_invariants(b, tok, n, max_new_tokens, eos_ids=None):
    eos_ids = eos_ids or [tok.eos_token_id]
    B, T = b.completion_ids.shape
    assert len(b) == B == len(b.prompts) == len(b.completions) and T <= max_new_tokens and b.group_size == n
    assert b.prompt_mask.shape == b.prompt_ids.shape and b.rollout_logp.shape == (B, T) and b.truncated.shape == (B,)
    assert b.truncated.dtype == torch.bool
    lengths = b.completion_mask.sum(1)
    for i in range(B):
        ids, m = b.completion_ids[i], b.completion_mask[i].bool()
        L = int(lengths[i])
        assert m.tolist() == [True] * L + [False] * (T - L)
        eos_pos = [j for j in range(L) if int(ids[j]) in eos_ids]
        if b.truncated[i]: assert eos_pos == [] and L == max_new_tokens
        else: assert eos_pos == [L - 1]
        assert (ids[~m] == tok.pad_token_id).all() and (b.rollout_logp[i, ~m] == 0).all()
        assert torch.isfinite(b.rollout_logp[i, m]).all() and (b.rollout_logp[i, m] <= 0).all()
        # the text is every token before a special EOS, special tokens included (so '1<unk>2' never reads as '12')
        text_ids = [int(t) for t in ids[m] if not (int(t) in eos_ids and int(t) in tok.all_special_ids)]
        assert b.completions[i] == tok.decode(text_ids, skip_special_tokens=False)
    assert b.num_tokens == int(lengths.sum())


def test_protocol_and_sync_weights(engine, policy):
    assert isinstance(engine, RolloutEngine)
    assert engine.sync_weights(policy[0]) is None


def test_shapes_group_order_and_masks(engine, policy):
    model, tok = policy
    torch.manual_seed(0)
    b = engine.generate(PROMPTS, n=4, max_new_tokens=8, temperature=1.0)
    check_invariants(b, tok, 4, 8)
    assert b.prompts == [p for p in PROMPTS for _ in range(4)] and b.num_groups == 5
    enc = [tok(p).input_ids for p in PROMPTS]
    P = max(map(len, enc))
    for i in range(len(b)):
        e = enc[i // 4]
        assert b.prompt_ids[i].tolist() == [tok.pad_token_id] * (P - len(e)) + e
        assert b.prompt_mask[i].tolist() == [0] * (P - len(e)) + [1] * len(e)
    assert b.truncated.any() or not b.truncated.all()  # at least runs; the next tests force each case


def test_truncation_with_one_token(engine, policy):
    model, tok = policy
    torch.manual_seed(1)
    b = engine.generate(PROMPTS, n=8, max_new_tokens=1)
    assert b.completion_ids.shape == (40, 1)
    torch.testing.assert_close(b.truncated, b.completion_ids[:, 0] != tok.eos_token_id)
    assert (b.completion_mask == 1).all()
    check_invariants(b, tok, 8, 1)


def test_eos_and_padding_after_it(engine, policy):
    "Many samples, long enough that some rows end with EOS before others: padding after EOS, masks, flags."
    model, tok = policy
    torch.manual_seed(2)
    b = engine.generate(PROMPTS, n=16, max_new_tokens=12, temperature=1.5)
    check_invariants(b, tok, 16, 12)
    L = b.completion_mask.sum(1)
    assert (~b.truncated).any() and (L < b.completion_ids.shape[1]).any()  # some finished early and were padded


@pytest.mark.parametrize('temperature', [1.0, 0.7])
def test_rollout_logp_equals_teacher_forced(engine, policy, temperature):
    model, tok = policy
    torch.manual_seed(3)
    b = engine.generate(PROMPTS, n=4, max_new_tokens=8, temperature=temperature)
    torch.testing.assert_close(b.rollout_logp, teacher_forced(model, b, temperature), atol=1e-4, rtol=0)


def test_top_p_logp_is_the_truncated_distribution(engine, policy):
    model, tok = policy
    torch.manual_seed(4)
    b = engine.generate(PROMPTS, n=8, max_new_tokens=8, temperature=1.0, top_p=0.7)
    check_invariants(b, tok, 8, 8)
    m = b.completion_mask.bool()
    diff = (b.rollout_logp - teacher_forced(model, b, 1.0))[m]
    assert (diff >= -1e-5).all() and diff.max() > 1e-3  # renormalised over the nucleus: never lower, usually higher


def test_model_generation_config_does_not_leak(base):
    "A hub model's generation_config (top_k, repetition_penalty, ...) must not change what is sampled."
    model, tok = load_policy(base)
    gc = model.get_base_model().generation_config
    gc.top_k, gc.repetition_penalty, gc.do_sample, gc.max_new_tokens = 1, 5.0, False, 2
    e = HFRolloutEngine(model, tok)
    torch.manual_seed(5)
    b = e.generate(PROMPTS[:2], n=16, max_new_tokens=6)
    assert len(set(b.completions[:16])) > 1  # top_k=1 would make all 16 samples identical
    assert b.completion_ids.shape[1] > 2
    torch.testing.assert_close(b.rollout_logp, teacher_forced(model, b, 1.0), atol=1e-4, rtol=0)
    assert model.get_base_model().generation_config is gc and gc.top_k == 1  # restored


def test_extra_eos_ids_from_generation_config(base):
    model, tok = load_policy(base)
    stop = tok.convert_tokens_to_ids('7')
    model.get_base_model().generation_config.eos_token_id = [tok.eos_token_id, stop]
    e = HFRolloutEngine(model, tok)
    assert e.eos_token_ids == [tok.eos_token_id, stop]
    torch.manual_seed(6)
    b = e.generate(PROMPTS, n=8, max_new_tokens=10, temperature=1.5)
    check_invariants(b, tok, 8, 10, eos_ids=[tok.eos_token_id, stop])


def test_determinism(engine):
    torch.manual_seed(7); a = engine.generate(PROMPTS, n=3, max_new_tokens=6)
    torch.manual_seed(7); b = engine.generate(PROMPTS, n=3, max_new_tokens=6)
    torch.manual_seed(8); c = engine.generate(PROMPTS, n=3, max_new_tokens=6)
    assert a.completions == b.completions and torch.equal(a.completion_ids, b.completion_ids)
    assert torch.equal(a.rollout_logp, b.rollout_logp)
    assert a.completions != c.completions


def test_decode_round_trip(engine, policy):
    model, tok = policy
    torch.manual_seed(9)
    b = engine.generate(PROMPTS, n=4, max_new_tokens=6)
    special = set(tok.all_special_ids)
    checked = 0
    for i in range(len(b)):
        ids = b.completion_ids[i][b.completion_mask[i].bool()].tolist()
        body = [t for t in ids if t not in special]
        if len(body) < len(ids) - (0 if b.truncated[i] else 1): continue  # a special token sampled mid-completion
        assert tok(b.completions[i], add_special_tokens=False).input_ids == body
        checked += 1
    assert checked > 0


def test_modes_restored_and_adapter_used(engine, policy):
    model, tok = policy
    model.train()
    engine.generate(PROMPTS[:1], n=2, max_new_tokens=2)
    assert model.training
    model.eval()
    engine.generate(PROMPTS[:1], n=2, max_new_tokens=2)
    assert not model.training
    model.train()
    torch.manual_seed(10)
    b = engine.generate(PROMPTS, n=2, max_new_tokens=4)
    with torch.no_grad(), model.disable_adapter():
        base_lp = teacher_forced(model, b, 1.0)
    assert (b.rollout_logp - base_lp).abs().max() > 1e-3  # sampled from the adapted policy, not the base


def test_input_errors(engine):
    with pytest.raises(ValueError, match=r'prompts\[1\] is 21 tokens long, more than max_prompt_length=16'):
        engine.generate(['S=1:', 'S=' + '1' * 18 + ':'], n=2, max_new_tokens=2)
    with pytest.raises(ValueError, match=r'prompts\[0\] is empty'): engine.generate([''], n=2, max_new_tokens=2)
    with pytest.raises(ValueError, match='prompts is empty'): engine.generate([], n=2, max_new_tokens=2)
    with pytest.raises(ValueError, match='max_new_tokens must be an integer >= 1'): engine.generate(PROMPTS, n=2, max_new_tokens=0)
    with pytest.raises(ValueError, match=r'top_p must be in \(0, 1\]'): engine.generate(PROMPTS, n=2, max_new_tokens=2, top_p=0)
    with pytest.raises(ValueError, match='temperature must be > 0'): engine.generate(PROMPTS, n=2, max_new_tokens=2, temperature=-1)
    with pytest.raises(ValueError, match='max_prompt_length must be an integer'): HFRolloutEngine(None, None, max_prompt_length=0)


def test_batch_validation_and_repr(engine):
    torch.manual_seed(11)
    b = engine.generate(PROMPTS[:2], n=3, max_new_tokens=3)
    assert 'RolloutBatch(2 prompts x 3 samples' in repr(b) and '<table>' in b._repr_html_()
    with pytest.raises(ValueError, match='not a whole number of groups'):
        RolloutBatch(**{**b.__dict__, 'group_size': 4})
    with pytest.raises(ValueError, match='truncated has 5 rows, expected B=6'):
        RolloutBatch(**{**b.__dict__, 'truncated': b.truncated[:5]})


def test_qlora_generate_then_train(base):
    "Sampling (eval, no grad) from a 4-bit model and then a training step: the bitsandbytes CPU repacking trap."
    model, tok = load_policy(base, quantization='4bit', device='cpu')
    e = HFRolloutEngine(model, tok)
    torch.manual_seed(12)
    b = e.generate(PROMPTS, n=2, max_new_tokens=5, temperature=0.8)
    torch.testing.assert_close(b.rollout_logp, teacher_forced(model, b, 0.8), atol=1e-4, rtol=0)
    model.train()
    out = token_logprobs(model, b.prompt_ids, b.prompt_mask, b.completion_ids, b.completion_mask, 0.8)
    out.logp.sum().backward()
    assert all(p.grad is not None for n, p in model.named_parameters() if 'lora_B' in n)
