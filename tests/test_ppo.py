"""PPO with a critic (issue 20): GAE worked by hand, the critic's plumbing, and PPO learning the built-in task in the
demo's budget with a critic that explains part of the returns."""
import math
import numpy as np, pytest, torch
from flowrl_nb.config import FlowRLConfig
from flowrl_nb.objective import gae_advantages, ppo_loss

torch.set_num_threads(1)


def test_gae_by_hand():
    """Two completions. The first: 3 tokens, reward 1, V = (0.5, 0.6, 0.8), γ = 1, λ = 0.95.
    δ = (0.6 − 0.5, 0.8 − 0.6, 1 − 0.8) = (0.1, 0.2, 0.2); A₂ = 0.2, A₁ = 0.2 + 0.95·0.2 = 0.39,
    A₀ = 0.1 + 0.95·0.39 = 0.4705; R = A + V = (0.9705, 0.99, 1.0).
    The second: 2 tokens (the third is padding), reward 0, V = (0.3, 0.2). With the same γ, λ:
    δ = (0.2 − 0.3, 0 − 0.2) = (−0.1, −0.2); A₁ = −0.2, A₀ = −0.1 + 0.95·(−0.2) = −0.29; R = (0.01, 0)."""
    values = torch.tensor([[0.5, 0.6, 0.8], [0.3, 0.2, 5.0]], dtype=torch.float64)
    mask = torch.tensor([[1., 1., 1.], [1., 1., 0.]], dtype=torch.float64)
    adv, ret = gae_advantages(torch.tensor([1., 0.], dtype=torch.float64), values, mask, gamma=1.0, lam=0.95, whiten=False)
    torch.testing.assert_close(adv, torch.tensor([[0.4705, 0.39, 0.2], [-0.29, -0.2, 0.0]], dtype=torch.float64))
    torch.testing.assert_close(ret, torch.tensor([[0.9705, 0.99, 1.0], [0.01, 0.0, 0.0]], dtype=torch.float64))
    # discounting: γ = 0.5, λ = 1 on the first: R_t = 0.5^(2−t)·1, A = R − V
    adv, ret = gae_advantages(torch.tensor([1.], dtype=torch.float64), values[:1], mask[:1], gamma=0.5, lam=1.0, whiten=False)
    torch.testing.assert_close(ret, torch.tensor([[0.25, 0.5, 1.0]], dtype=torch.float64))
    torch.testing.assert_close(adv, ret - values[:1])
    # whitened (the default): zero mean, unbiased unit variance over the five real tokens, padding 0
    adv_w, _ = gae_advantages(torch.tensor([1., 0.], dtype=torch.float64), values, mask, gamma=1.0, lam=0.95)
    real = adv_w[mask.bool()]
    assert abs(float(real.mean())) < 1e-9 and abs(float(real.var()) - 1) < 1e-6 and adv_w[1, 2] == 0


def test_gae_kl_in_the_reward():
    "With ppo_kl_coef the reward of every token carries −kl_coef·(log π_old − log π_ref) (veRL's use_kl_in_reward)."
    mask, values = torch.ones(1, 2), torch.zeros(1, 2)
    old, ref = torch.tensor([[-1.0, -2.0]]), torch.tensor([[-1.5, -1.0]])   # per-token KL: 0.5, −1.0
    _, ret = gae_advantages(torch.tensor([1.0]), values, mask, old_logp=old, ref_logp=ref, kl_coef=0.1, whiten=False)
    # r = (−0.05, +0.1 + 1): returns (γ = 1) = (1.05, 1.1)
    torch.testing.assert_close(ret, torch.tensor([[1.05, 1.1]]))


def test_value_loss_is_clipped_around_the_old_values():
    logp = torch.zeros(2, 2, requires_grad=True)
    old_v, ret = torch.zeros(2, 2), torch.ones(2, 2)
    v = torch.tensor([[2.0, 0.1], [0.4, 0.6]], requires_grad=True)
    loss, m = ppo_loss(logp, torch.zeros(2, 2), torch.zeros(2, 2), torch.ones(2, 2), v, old_v, ret, cliprange_value=0.5)
    # per token max((v−1)², (clip(v, −0.5, 0.5)−1)²): 2.0 → max(1, 0.25); 0.1 → 0.81; 0.4 → 0.36; 0.6 → max(0.16, 0.25)
    assert math.isclose(m['critic/vf_loss'], 0.5 * (1 + 0.81 + 0.36 + 0.25) / 4, rel_tol=1e-6)
    assert math.isclose(m['critic/vf_clipfrac'], 0.25)
    loss.backward()
    # ½·mean of the worse error: d/dv = (v − 1)/4 where the unclipped error wins, 0 where the clip wins (its clamp is flat)
    torch.testing.assert_close(v.grad, torch.tensor([[0.25, -0.225], [-0.15, 0.0]]))


def test_the_critic_is_outside_peft_with_its_own_lr_and_its_own_clip(tmp_path, monkeypatch):
    from flowrl_nb.trainer import Trainer
    tr = Trainer(FlowRLConfig(algorithm='ppo', prompts_per_step=4, num_generations=4, save_steps=0, coverage_steps=0,
                              output_dir=str(tmp_path / 'run')))
    head = tr.heads['critic']
    assert not any(p is q for p in head.parameters() for q in tr.model.parameters())      # not a PEFT module
    names = [g['name'] for g in tr.optimizer.param_groups]
    assert names == ['policy', 'critic'] and tr.optimizer.param_groups[1]['lr'] == FlowRLConfig().critic_learning_rate
    # every gradient clip the trainer applies, with the parameters it covers
    clips, clip = [], torch.nn.utils.clip_grad_norm_
    monkeypatch.setattr(torch.nn.utils, 'clip_grad_norm_', lambda ps, *a, **k: (clips.append({id(p) for p in ps}), clip(ps, *a, **k))[1])
    m = tr.train_step()
    critic = {id(p) for p in head.parameters()}
    policy = {id(p) for p in tr.model.parameters() if p.requires_grad}
    assert clips and clips[0] == policy and clips[1] == critic, 'the policy and the critic are clipped apart, each on its own'
    assert m['optim/critic_lr'] == FlowRLConfig().critic_learning_rate and m['optim/critic_grad_norm'] > 0


def test_critic_warmup_trains_only_the_critic(tmp_path):
    from flowrl_nb.trainer import Trainer
    tr = Trainer(FlowRLConfig(algorithm='ppo', prompts_per_step=4, num_generations=4, save_steps=0, coverage_steps=0,
                              critic_warmup=1, weight_decay=0.1, output_dir=str(tmp_path / 'run')))  # decay would move a stepped policy
    lora = {n: p.detach().clone() for n, p in tr.model.named_parameters() if p.requires_grad}
    head = [p.detach().clone() for p in tr.heads['critic'].parameters()]
    tr.train_step()   # step 1: warm-up
    assert all(torch.equal(lora[n], p) for n, p in tr.model.named_parameters() if p.requires_grad), 'the policy moved in the warm-up'
    assert any(not torch.equal(a, b) for a, b in zip(head, tr.heads['critic'].parameters())), 'the critic did not train'
    tr.train_step()   # step 2: both
    assert any(not torch.equal(lora[n], p) for n, p in tr.model.named_parameters() if p.requires_grad)


def test_ppo_learns_the_built_in_task_in_the_demo_budget(tmp_path):
    """The demo's config and budget (90 steps), PPO alone: the exact correct mass rises well above the start, and the
    critic's explained variance, reported every step, rises above 0 (its mean over the last 15 steps)."""
    from flowrl_nb.experiments import compare, demo_config
    res = compare(demo_config(), algorithms=('ppo',), out_dir=tmp_path / 'demo', workers=1)
    hist = res.histories['ppo']
    start, end = hist[0]['coverage/correct_mass'], hist[-1]['coverage/correct_mass']
    assert hist[-1]['step'] == 90 and end > start + 0.15, (start, end)
    ev = np.array([m['critic/vf_explained_var'] for m in hist[1:]])
    assert len(ev) == 90 and np.isfinite(ev).all()
    print(f'correct mass {start:.3f} -> {end:.3f}; explained variance by block of 15 steps: '
          + ', '.join(f'{ev[i:i + 15].mean():+.3f}' for i in range(0, 90, 15)))
    assert ev[-15:].mean() > 0, ev[-15:]
    assert 'ppo' in res.summary['runs'] and res.summary['runs']['ppo']['algorithm'] == 'ppo'
