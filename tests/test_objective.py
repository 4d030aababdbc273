"""Heavier checks of flowrl_nb.objective: gradcheck, hypothesis properties, every input error.

Expected values are worked out by hand with `math`, never by calling the function under test again.
"""
import math

import pytest
import torch
from hypothesis import given, settings, strategies as st

from flowrl_nb.objective import (IS_MODES, flowrl_loss, grpo_loss, group_advantages, reinforce_pp_advantages,
                                 reinforce_pp_loss)

torch.set_num_threads(1)
PROPS = settings(max_examples=50, deadline=None)
e = math.exp


def batch(B=4, T=5, seed=0, dtype=torch.float64, min_len=1):
    "Random FlowRL-shaped batch: right-padded mask with every row non-empty."
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(min_len, T + 1, (B,), generator=g)
    mask = (torch.arange(T)[None] < lengths[:, None]).to(dtype)
    def lp(): return -torch.rand(B, T, generator=g, dtype=dtype) * 2 - 0.1
    return dict(logp=lp(), ref_logp=lp(), old_logp=lp(), rollout_logp=lp(),
                log_z=torch.randn(B, generator=g, dtype=dtype), adv=torch.randn(B, generator=g, dtype=dtype),
                mask=mask)


# ---------------------------------------------------------------- hand-computed values

def test_group_advantages_by_hand():
    r = torch.tensor([3., 1., 2., 5., 5., 5.], dtype=torch.float64)
    # group (3, 1, 2): mean 2, unbiased std 1; group (5, 5, 5): all equal
    torch.testing.assert_close(group_advantages(r, 3), torch.tensor([1/(1+1e-6), -1/(1+1e-6), 0, 0, 0, 0],
                                                                     dtype=torch.float64))
    # group of two (0, 4): mean 2, unbiased std sqrt(8)
    out = group_advantages([0., 4.], 2, eps=1e-3)
    torch.testing.assert_close(out, torch.tensor([-2/(math.sqrt(8)+1e-3), 2/(math.sqrt(8)+1e-3)]))
    assert group_advantages(torch.tensor([1, 0, 1]), 1).dtype.is_floating_point  # integer rewards are accepted


def hand_batch():
    mask = torch.tensor([[1., 1., 0.], [1., 1., 1.]], dtype=torch.float64)
    logp = torch.tensor([[-1.0, -2.0, 9.9], [-0.5, -0.5, -2.0]], dtype=torch.float64)
    ref = torch.tensor([[-1.0, -1.4, 3.0], [-1.0, -1.0, -1.0]], dtype=torch.float64)
    old = logp - torch.tensor([[0.1, 0.2, 5.0], [-0.1, -0.1, -0.1]], dtype=torch.float64)
    return logp, ref, old, torch.tensor([0.5, -0.5], dtype=torch.float64), torch.tensor([0.1, -0.1],
                                                                                      dtype=torch.float64), mask


@pytest.mark.parametrize('mode', IS_MODES)
def test_flowrl_default_beta_by_hand(mode):
    logp, ref, old, log_z, adv, mask = hand_batch()
    # lp̄ = (-1.5, -1), lp̄_ref = (-1.2, -1); β = 15: δ = (0.5 - 1.5 - 1.5 + 1.2, -0.5 - 1 + 1.5 + 1)
    d = (0.5 - 1.5 - 1.5 + 1.2, -0.5 - 1.0 + 1.5 + 1.0)
    raw = {'none': (e(0.3), e(-0.3)), 'cap': (e(0.3), e(-0.3)), 'clip': (e(0.3), e(-0.3)),
           'geo_clip': (e(0.15), e(-0.1))}[mode]
    w = {'none': raw, 'cap': (min(raw[0], 1.3), raw[1]), 'clip': (1.28, 0.8), 'geo_clip': raw}[mode]
    loss, mt = flowrl_loss(logp, ref, old, log_z, adv, mask, is_mode=mode, is_cap=1.3)
    assert loss.item() == pytest.approx((w[0]*d[0]**2 + w[1]*d[1]**2) / 2, rel=1e-12)
    assert mt['importance_weight'] == pytest.approx(sum(w) / 2, rel=1e-12)
    assert mt['importance_weight_raw'] == pytest.approx(sum(raw) / 2, rel=1e-12)
    assert mt['final_loss'] == pytest.approx(loss.item())
    assert mt['log_z'] == pytest.approx(0.0, abs=1e-15)
    assert mt['ref_log_prob'] == pytest.approx((-1 - 1.4 - 1 - 1 - 1) / 5)
    assert mt['old_log_prob'] == pytest.approx((-1.1 - 2.2 - 0.4 - 0.4 - 1.9) / 5)
    assert mt['log_reward'] == pytest.approx((2*0.1 - 3*0.1) / 5)
    low, high = {'none': (0, 0), 'cap': (0, 0.5), 'clip': (0.5, 0.5), 'geo_clip': (0, 0)}[mode]
    assert (mt['clip_frac_low'], mt['clip_frac_high']) == (low, high)


def test_flowrl_tis_geo_clip_uses_mean_aggregation():
    logp, ref, old, log_z, adv, mask = hand_batch()
    rollout = old - torch.tensor([[0.4, 0.8, 0.], [0.3, 0.3, 0.3]], dtype=torch.float64)
    # geo_clip: TIS factor min(exp(mean(old - rollout)), cap) = (min(e^0.6, 1.5), min(e^0.3, 1.5))
    tis = (1.5, e(0.3))
    w = (e(0.15) * tis[0], e(-0.1) * tis[1])
    d = (0.5 - 1.5 - 1.5 + 1.2, -0.5 - 1.0 + 1.5 + 1.0)
    loss, mt = flowrl_loss(logp, ref, old, log_z, adv, mask, is_mode='geo_clip', rollout_logp=rollout, tis_cap=1.5)
    assert loss.item() == pytest.approx((w[0]*d[0]**2 + w[1]*d[1]**2) / 2, rel=1e-12)
    assert mt['tis_weight'] == pytest.approx(sum(tis) / 2)
    # rollout_logp without tis_cap: checked, not used
    assert flowrl_loss(logp, ref, old, log_z, adv, mask, rollout_logp=rollout)[0].item() == \
        flowrl_loss(logp, ref, old, log_z, adv, mask)[0].item()


def test_none_mode_clamps_huge_log_ratio():
    logp, ref, old, log_z, adv, mask = hand_batch()
    loss, mt = flowrl_loss(logp, ref, old - 30 * mask, log_z, adv, mask, is_mode='none')  # Σ Δ = 60 and 90
    assert math.isfinite(loss.item())
    assert mt['importance_weight'] == pytest.approx(e(20))


def test_grpo_seq_mean_with_kl_by_hand():
    mask = torch.tensor([[1., 0.], [1., 1.]], dtype=torch.float64)
    old = torch.zeros(2, 2, dtype=torch.float64)
    logp = torch.tensor([[math.log(2.0), -7.0], [math.log(0.7), math.log(1.2)]], dtype=torch.float64)
    ref = logp + torch.tensor([[0.2, 0.0], [-0.3, 0.1]], dtype=torch.float64)
    adv = torch.tensor([-1.0, 2.0], dtype=torch.float64)
    # seq 0, A=-1, ratio 2: -min(-2, -1.28) = 2; seq 1, A=2: ratio 0.7 → -min(1.4, 1.6) = -1.4; 1.2 → -2.4
    k3 = lambda x: e(x) - x - 1
    surr = (2.0 + (-1.4 - 2.4) / 2) / 2
    kl = (k3(0.2) + (k3(-0.3) + k3(0.1)) / 2) / 2
    loss, mt = grpo_loss(logp, old, adv, mask, ref_logp=ref, kl_coef=0.5, agg='seq_mean_token_mean')
    assert loss.item() == pytest.approx(surr + 0.5 * kl, rel=1e-12)
    assert mt['ref_kl'] == pytest.approx((0.2 - 0.3 + 0.1) / 3)
    assert mt['ppo_kl'] == pytest.approx(-(math.log(2.0) + math.log(0.7) + math.log(1.2)) / 3)
    assert (mt['clip_frac_low'], mt['clip_frac_high']) == (0.0, 0.0)  # ratio 2 with A < 0 is not clipped


def test_reinforce_pp_advantages_use_last_masked_token():
    # a hole in the mask: the reward goes to the LAST completion token (index 2), returns skip the hole
    mask = torch.tensor([[1., 0., 1., 0.]], dtype=torch.float64)
    ref = torch.zeros(1, 4, dtype=torch.float64)
    old = torch.tensor([[0.5, 9.0, -0.5, 9.0]], dtype=torch.float64)
    a = reinforce_pp_advantages(torch.tensor([2.0], dtype=torch.float64), old, ref, mask, kl_coef=1.0)
    G = (-0.5 + 0.5 + 2.0, 0.5 + 2.0)           # returns at tokens 0 and 2
    mu, sd = sum(G) / 2, abs(G[0] - G[1]) / 2
    torch.testing.assert_close(a, torch.tensor([[(G[0]-mu)/sd, 0., (G[1]-mu)/sd, 0.]], dtype=torch.float64))


def test_reinforce_pp_loss_by_hand():
    mask = torch.tensor([[1., 1.]], dtype=torch.float64)
    old = torch.zeros(1, 2, dtype=torch.float64)
    logp = torch.log(torch.tensor([[1.5, 0.5]], dtype=torch.float64))
    adv = torch.tensor([[1.0, 2.0]], dtype=torch.float64)
    loss, mt = reinforce_pp_loss(logp, old, adv, mask)
    assert loss.item() == pytest.approx(-(1.28 * 1.0 + 0.5 * 2.0) / 2)
    assert (mt['clip_frac_low'], mt['clip_frac_high']) == (0.0, 0.5)


# ---------------------------------------------------------------- gradients

@pytest.mark.parametrize('mode', IS_MODES)
@pytest.mark.parametrize('tis', [False, True])
def test_flowrl_gradcheck(mode, tis):
    b = batch(seed=1)
    d = 0.3 * torch.randn(4, 5, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    # old_logp moves with logp (Δ = d fixed), so the finite differences see the same constant weight w as autograd
    def f(logp, log_z):
        return flowrl_loss(logp, b['ref_logp'], logp.detach() - d, log_z, b['adv'], b['mask'], is_mode=mode,
                           rollout_logp=(logp.detach() - d - 0.1) if tis else None, tis_cap=1.2 if tis else None)[0]
    inputs = (b['logp'].clone().requires_grad_(), b['log_z'].clone().requires_grad_())
    assert torch.autograd.gradcheck(f, inputs)


@pytest.mark.parametrize('mode', IS_MODES)
def test_flowrl_gradient_formula_and_constants(mode):
    b = batch(seed=3)
    leaves = {k: v.clone().requires_grad_() for k, v in b.items() if k != 'mask'}
    loss, mt = flowrl_loss(**{k: leaves[k] for k in ('logp', 'ref_logp', 'old_logp', 'log_z', 'adv')},
                           mask=b['mask'], is_mode=mode, rollout_logp=leaves['rollout_logp'], tis_cap=5.0)
    loss.backward()
    for const in ('ref_logp', 'old_logp', 'adv', 'rollout_logp'):
        assert leaves[const].grad is None, f'{const} must be treated as a constant'
    m, B = b['mask'], b['mask'].shape[0]
    n = m.sum(-1)
    delta = b['log_z'] + (b['logp']*m).sum(-1)/n - 15.0*b['adv'] - (b['ref_logp']*m).sum(-1)/n
    w = leaves['log_z'].grad * B / (2 * delta)       # ∂L/∂log Z = 2wδ/B
    assert w.mean().item() == pytest.approx(mt['importance_weight'])
    assert (w > 0).all()
    # ∂L/∂logp_{i,t} = ∂L/∂lp̄_i · m_t / n_i = 2w_iδ_i m_t / (B n_i)
    torch.testing.assert_close(leaves['logp'].grad, (2 * w * delta / (B * n))[:, None] * m)


@pytest.mark.parametrize('agg', ['token_mean', 'seq_mean_token_mean'])
def test_grpo_and_reinforce_pp_gradcheck(agg):
    b = batch(seed=4)
    assert torch.autograd.gradcheck(
        lambda lp: grpo_loss(lp, b['old_logp'], b['adv'], b['mask'], ref_logp=b['ref_logp'], kl_coef=0.3, agg=agg)[0],
        (b['logp'].clone().requires_grad_(),))
    adv = torch.randn(4, 5, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda lp: reinforce_pp_loss(lp, b['old_logp'], adv, b['mask'])[0],
                                    (b['logp'].clone().requires_grad_(),))


# ---------------------------------------------------------------- properties

@PROPS
@given(n=st.integers(2, 6), k=st.integers(1, 4), data=st.data(), a=st.floats(0.5, 20), b=st.floats(-10, 10))
def test_group_advantages_affine_invariant(n, k, data, a, b):
    "r̂ is unchanged by a·r + b (a > 0), up to the eps = 1e-6 added to the std."
    r = torch.tensor(data.draw(st.lists(st.integers(-10, 10), min_size=n * k, max_size=n * k)), dtype=torch.float64)
    torch.testing.assert_close(group_advantages(a * r + b, n), group_advantages(r, n), atol=1e-4, rtol=0)


def perturb_padding(x, mask, g):
    "x with every padded entry replaced by garbage: large values, -inf or NaN."
    junk = torch.randn(x.shape, generator=g, dtype=x.dtype) * 100
    junk[0, -1] = float('nan'); junk[-1, -1] = -float('inf')
    return torch.where(mask.bool(), x, junk)


@PROPS
@given(seed=st.integers(0, 10_000), B=st.integers(1, 5), T=st.integers(2, 6), mode=st.sampled_from(IS_MODES))
def test_padding_never_changes_any_loss(seed, B, T, mode):
    b = batch(B, T, seed)
    m, g = b['mask'], torch.Generator().manual_seed(seed + 1)
    bad = {k: perturb_padding(b[k], m, g) for k in ('logp', 'ref_logp', 'old_logp', 'rollout_logp')}
    adv_t = torch.randn(B, T, generator=g, dtype=torch.float64)
    def all_losses(t, adv_tok):
        return [flowrl_loss(t['logp'], t['ref_logp'], t['old_logp'], b['log_z'], b['adv'], m, is_mode=mode,
                            rollout_logp=t['rollout_logp'], tis_cap=3.0),
                grpo_loss(t['logp'], t['old_logp'], b['adv'], m, ref_logp=t['ref_logp'], kl_coef=0.1),
                reinforce_pp_loss(t['logp'], t['old_logp'], adv_tok, m)]
    for (l1, m1), (l2, m2) in zip(all_losses(b, adv_t), all_losses(bad, perturb_padding(adv_t, m, g))):
        assert l1.item() == l2.item() and m1 == m2
    a1 = reinforce_pp_advantages(b['adv'], b['old_logp'], b['ref_logp'], m)
    a2 = reinforce_pp_advantages(b['adv'], bad['old_logp'], bad['ref_logp'], m)
    assert torch.equal(a1, a2) and (a1[m == 0] == 0).all()


@PROPS
@given(seed=st.integers(0, 10_000), B=st.integers(1, 5), T=st.integers(1, 6), mode=st.sampled_from(IS_MODES),
       tis=st.booleans())
def test_on_policy_weight_is_one(seed, B, T, mode, tis):
    b = batch(B, T, seed)
    loss, mt = flowrl_loss(b['logp'], b['ref_logp'], b['logp'].clone(), b['log_z'], b['adv'], b['mask'],
                           is_mode=mode, rollout_logp=b['logp'].clone() if tis else None, tis_cap=2.0 if tis else None)
    assert mt['importance_weight'] == 1.0 and mt['importance_weight_raw'] == 1.0
    assert mt['clip_frac_low'] == mt['clip_frac_high'] == 0.0
    assert grpo_loss(b['logp'], b['logp'].clone(), b['adv'], b['mask'])[1]['importance_weight'] == pytest.approx(1.0)


# ---------------------------------------------------------------- every input error

def _b():
    b = batch(B=2, T=3, seed=7, dtype=torch.float32, min_len=3)
    return b


def _flowrl(**kw):
    b = _b(); b.pop('rollout_logp'); b.update(kw)
    return flowrl_loss(**b)


def _grpo(**kw):
    b = _b(); args = dict(logp=b['logp'], old_logp=b['old_logp'], adv=b['adv'], mask=b['mask']); args.update(kw)
    return grpo_loss(**args)


def _rpp_adv(**kw):
    b = _b(); args = dict(rewards=b['adv'], old_logp=b['old_logp'], ref_logp=b['ref_logp'], mask=b['mask'])
    args.update(kw)
    return reinforce_pp_advantages(**args)


def _rpp_loss(**kw):
    b = _b(); args = dict(logp=b['logp'], old_logp=b['old_logp'], adv=torch.zeros(2, 3), mask=b['mask'])
    args.update(kw)
    return reinforce_pp_loss(**args)


nan_at_01 = torch.zeros(2, 3); nan_at_01[0, 1] = float('nan')
ERRORS = [
    (_flowrl, dict(mask=torch.ones(3)), 'mask must be a 2-D (B, T) tensor of 0/1, got (3,)'),
    (_flowrl, dict(mask=torch.full((2, 3), 0.5)), 'mask must contain only 0 and 1, got 0.5'),
    (_flowrl, dict(mask=torch.tensor([[1., 1., 1.], [0., 0., 0.]])), 'mask row 1 is all zeros: every sequence needs'),
    (_flowrl, dict(logp=torch.zeros(2, 4)), 'logp has shape (2, 4) but mask has shape (2, 3)'),
    (_flowrl, dict(ref_logp=torch.zeros(3, 3)), 'ref_logp has shape (3, 3) but mask has shape (2, 3)'),
    (_flowrl, dict(old_logp=torch.zeros(2)), 'old_logp has shape (2,) but mask has shape (2, 3)'),
    (_flowrl, dict(rollout_logp=torch.zeros(2, 2), tis_cap=2.0), 'rollout_logp has shape (2, 2) but mask has'),
    (_flowrl, dict(log_z=torch.zeros(2, 1)), 'log_z has shape (2, 1) but must be (B,) = (2,) to match mask'),
    (_flowrl, dict(adv=torch.zeros(3)), 'adv has shape (3,) but must be (B,) = (2,)'),
    (_flowrl, dict(logp=nan_at_01), 'logp has NaN or Inf at 1 position(s) where mask is 1, first at (0, 1)'),
    (_flowrl, dict(ref_logp=torch.full((2, 3), float('inf'))), 'ref_logp has NaN or Inf at 6 position(s)'),
    (_flowrl, dict(log_z=torch.tensor([0., float('nan')])), 'log_z has NaN or Inf at 1 position(s), first at index 1'),
    (_flowrl, dict(adv=torch.tensor([float('-inf'), 0.])), 'adv has NaN or Inf'),
    (_flowrl, dict(logp=[[0.]]), 'logp must be a torch.Tensor, got list'),
    (_flowrl, dict(beta=-1.0), 'beta must be a number ≥ 0, got -1.0'),
    (_flowrl, dict(beta=float('nan')), 'beta must be a number ≥ 0, got nan'),
    (_flowrl, dict(beta='15'), "beta must be a number ≥ 0, got '15'"),
    (_flowrl, dict(eps_low=0.0), 'eps_low must be a number in (0, 1), got 0.0'),
    (_flowrl, dict(eps_low=1.0), 'eps_low must be a number in (0, 1), got 1.0'),
    (_flowrl, dict(eps_high=1.28), 'eps_high must be a number in (0, 1), got 1.28'),
    (_flowrl, dict(is_cap=0.0), 'is_cap must be a number > 0, got 0.0'),
    (_flowrl, dict(is_cap=-10), 'is_cap must be a number > 0, got -10'),
    (_flowrl, dict(is_mode='clamp'), "is_mode must be one of 'none', 'cap', 'clip', 'geo_clip', got 'clamp'"),
    (_flowrl, dict(is_mode='geo'), 'did you mean "geo_clip"'),
    (_flowrl, dict(tis_cap=2.0), 'tis_cap=2.0 needs rollout_logp'),
    (_flowrl, dict(rollout_logp=torch.zeros(2, 3), tis_cap=0.0), 'tis_cap must be a number > 0, or None'),
    (_grpo, dict(agg='seq_mean'), "agg must be one of 'token_mean', 'seq_mean_token_mean', got 'seq_mean'"),
    (_grpo, dict(kl_coef=0.1), 'kl_coef=0.1 needs ref_logp'),
    (_grpo, dict(kl_coef=-0.1), 'kl_coef must be a number ≥ 0, got -0.1'),
    (_grpo, dict(eps_high=0.0), 'eps_high must be a number in (0, 1), got 0.0'),
    (_grpo, dict(adv=torch.zeros(2, 3)), 'adv has shape (2, 3) but must be (B,) = (2,)'),
    (_grpo, dict(mask=torch.tensor([[0., 0., 0.], [1., 1., 1.]])), 'mask row 0 is all zeros'),
    (_grpo, dict(ref_logp=torch.zeros(2, 2)), 'ref_logp has shape (2, 2) but mask has shape (2, 3)'),
    (_rpp_adv, dict(rewards=torch.zeros(3)), 'rewards has shape (3,) but must be (B,) = (2,)'),
    (_rpp_adv, dict(rewards=torch.tensor([0., float('inf')])), 'rewards has Inf at 1 position(s)'),  # NaN = unscorable: allowed
    (_rpp_adv, dict(kl_coef=-1.0), 'kl_coef must be a number ≥ 0, got -1.0'),
    (_rpp_adv, dict(eps=0.0), 'eps must be a number > 0, got 0.0'),
    (_rpp_adv, dict(ref_logp=nan_at_01), 'ref_logp has NaN or Inf at 1 position(s) where mask is 1'),
    (_rpp_loss, dict(adv=torch.zeros(2)), 'adv has shape (2,) but mask has shape (2, 3)'),
    (_rpp_loss, dict(adv=nan_at_01), 'adv has NaN or Inf at 1 position(s) where mask is 1'),
    (_rpp_loss, dict(eps_low=1.5), 'eps_low must be a number in (0, 1), got 1.5'),
    (lambda **kw: group_advantages(**{'rewards': torch.ones(8), 'group_size': 4, **kw}), dict(group_size=0),
     'group_size must be an integer ≥ 1, got 0'),
    (lambda **kw: group_advantages(**{'rewards': torch.ones(8), 'group_size': 4, **kw}), dict(group_size=2.0),
     'group_size must be an integer ≥ 1, got 2.0'),
    (lambda **kw: group_advantages(**{'rewards': torch.ones(8), 'group_size': 4, **kw}), dict(group_size=True),
     'group_size must be an integer ≥ 1, got True'),
    (lambda **kw: group_advantages(**{'rewards': torch.ones(8), 'group_size': 4, **kw}), dict(group_size=3),
     'rewards has 8 entries, not a multiple of group_size=3'),
    (lambda **kw: group_advantages(**{'rewards': torch.ones(8), 'group_size': 4, **kw}),
     dict(rewards=torch.ones(2, 4)), 'rewards has shape (2, 4) but must be (B,)'),
    (lambda **kw: group_advantages(**{'rewards': torch.ones(8), 'group_size': 4, **kw}),
     dict(rewards=torch.tensor([1., float('-inf'), 0., 0.])), 'rewards has Inf at 1 position(s), first at index 1'),
    (lambda **kw: group_advantages(**{'rewards': torch.ones(8), 'group_size': 4, **kw}), dict(eps=-1e-6),
     'eps must be a number > 0, got -1e-06'),
]


@pytest.mark.parametrize('fn,kw,msg', ERRORS, ids=[f'{i}:{m[:40]}' for i, (_, _, m) in enumerate(ERRORS)])
def test_bad_inputs_raise_value_error(fn, kw, msg):
    with pytest.raises(ValueError) as ei:
        fn(**kw)
    assert msg in str(ei.value)
