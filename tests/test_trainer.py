"End-to-end trainer tests on the built-in tiny model (CPU)."
import json, math, os, signal, subprocess, sys, textwrap, time
from pathlib import Path
import pytest, torch
from flowrl_nb.config import FlowRLConfig
from flowrl_nb.trainer import Trainer, latest_checkpoint
from flowrl_nb.runlog import load_run, read_jsonl

torch.set_num_threads(1)
SMALL = dict(prompts_per_step=4, num_generations=4, num_mini_batches=2, max_steps=6)


def cfg(tmp_path, name='run', **kw):
    return FlowRLConfig(**{**SMALL, 'output_dir': str(tmp_path / name), **kw})


def strip_times(ms):
    "Metrics without wall-clock fields (and without the log's own type/step/time keys)."
    return [{k: v for k, v in m.items() if not (k.startswith('time') or k.startswith('perf/') or k in ('type', 'step'))} for m in ms]


@pytest.mark.parametrize('algorithm', ['flowrl', 'grpo', 'reinforce_pp', 'ppo'])
def test_each_algorithm_trains_and_moves_the_adapter(tmp_path, algorithm):
    tr = Trainer(cfg(tmp_path, algorithm=algorithm, save_steps=0))
    before = {n: p.detach().clone() for n, p in tr.model.named_parameters() if p.requires_grad}
    hist = tr.train(2)
    assert len(hist) == 2 and tr.step_count == 2
    for m in hist:
        assert m['optim/skipped_steps'] == 0 and 0 <= m['reward/mean'] <= 1
        assert all(v is None or isinstance(v, (int, float, str)) for v in m.values())
    after = dict(tr.model.named_parameters())
    assert any(not torch.equal(before[n], after[n]) for n in before), 'no adapter weight changed'
    if algorithm == 'flowrl':
        assert {'actor/log_z', 'actor/delta_abs', 'actor/importance_weight', 'actor/ref_kl'} <= set(hist[-1])
    if algorithm == 'ppo':  # the critic's metrics under veRL's names, its own clip and learning rate
        assert {'critic/vf_loss', 'critic/vf_explained_var', 'optim/critic_grad_norm', 'optim/critic_lr'} <= set(hist[-1])
        assert (tr.last_checkpoint / 'critic_head.safetensors').exists()
    # the run can be read back
    run = load_run(tr.run_dir)
    assert [m['step'] for m in run.metrics] == [1, 2] and run.config.algorithm == algorithm
    assert tr.last_checkpoint.name == 'step-000002'   # saved at the end even with save_steps=0


def test_importance_weights_differ_from_one_after_first_minibatch(tmp_path):
    tr = Trainer(cfg(tmp_path, is_mode='none', learning_rate=5e-2, num_mini_batches=4, prompts_per_step=4, save_steps=0))
    m = tr.train_step()
    assert m['actor/importance_weight_raw'] != pytest.approx(1.0, abs=1e-6)


def test_qlora_4bit_trains(tmp_path):
    pytest.importorskip('bitsandbytes')
    tr = Trainer(cfg(tmp_path, quantization='4bit', save_steps=0))
    hist = tr.train(1)
    assert hist[0]['optim/skipped_steps'] == 0 and 'actor/log_z' in hist[0]
    assert any('4bit' in type(m).__name__ for m in tr.model.modules())


def test_live_control_change_reaches_next_step_and_events(tmp_path):
    tr = Trainer(cfg(tmp_path, save_steps=0))
    tr.train_step()
    tr.controls.set(beta=3.0, is_mode='clip')
    m = tr.train_step()
    assert m['control/beta'] == 3.0 and m['control/is_mode'] == 'clip'
    ev = [(e['step'], e['name'], e['old'], e['new']) for e in load_run(tr.run_dir).events]
    assert ev == [(2, 'beta', 15.0, 3.0), (2, 'is_mode', 'cap', 'clip')]
    with pytest.raises(ValueError, match='beta'):
        tr.controls.beta = -2
    with pytest.raises(ValueError, match='is_mode'):
        tr.controls.is_mode = 'clamp'
    assert tr.controls.beta == 3.0 and tr.controls.pending == {}


def test_ablation_switches_are_live_controls(tmp_path):
    tr = Trainer(cfg(tmp_path, save_steps=0))
    a = tr.train_step()
    tr.controls.set(reward_form='raw', length_norm='sum')
    b = tr.train_step()
    assert (a['control/reward_form'], a['control/length_norm']) == ('adv', 'mean')
    assert (b['control/reward_form'], b['control/length_norm']) == ('raw', 'sum')
    # with the raw reward in the exponent, log_reward is the mean raw reward (≥ 0), not the zero-mean r̂
    assert b['actor/log_reward'] >= 0
    names = [(e['step'], e['name']) for e in load_run(tr.run_dir).events]
    assert names == [(2, 'reward_form'), (2, 'length_norm')]


def test_background_run_pause_resume_stop(tmp_path):
    tr = Trainer(cfg(tmp_path, save_steps=0))
    tr.start(50)
    deadline = time.time() + 120
    while tr.step_count < 1 and time.time() < deadline: time.sleep(0.05)
    tr.pause()
    while tr.status != 'paused' and time.time() < deadline: time.sleep(0.05)
    assert tr.status == 'paused'
    s = tr.step_count; time.sleep(0.5); assert tr.step_count == s   # really paused
    tr.controls.beta = 7.0
    tr.unpause()
    while tr.step_count < s + 1 and time.time() < deadline: time.sleep(0.05)
    tr.stop()
    assert tr.status == 'stopped' and not tr.running
    assert tr.last_checkpoint.name == f'step-{tr.step_count:06d}'
    assert load_run(tr.run_dir).metrics[-1]['control/beta'] == 7.0
    with pytest.raises(RuntimeError):  # one loop at a time
        tr.start(1); tr.start(1)
    tr.stop()


def test_reward_function_failing_after_the_first_batch_does_not_stop_training(tmp_path):
    calls = []
    def flaky(completions, **kw):  # fine on the first batch, then its server goes down
        calls.append(1)
        if len(calls) > 1: raise RuntimeError('reward server down')
        return [0.0] * len(completions)
    def good(completions, target, **kw):
        return [1.0] * len(completions)
    tr = Trainer(cfg(tmp_path, save_steps=0), reward_funcs=[flaky, good])
    with pytest.warns(RuntimeWarning, match='reward server down'):
        hist = tr.train(3)
    assert len(calls) == 3
    assert [m['reward/errors'] for m in hist] == [0, 16, 16] and all(m['reward/mean'] == 1.0 for m in hist)


def test_reward_function_failing_on_the_first_batch_stops_before_any_update(tmp_path):
    from flowrl_nb.rewards import RewardError
    def reward_len(prompts, completions): return [-abs(20 - len(c)) for c in completions]  # no **kwargs
    tr = Trainer(cfg(tmp_path, save_steps=0), reward_funcs=[reward_len])
    before = {n: p.detach().clone() for n, p in tr.model.named_parameters() if p.requires_grad}
    with pytest.raises(RewardError, match=r"reward function 'reward_len' cannot score the first batch(.|\n)*unexpected keyword"):
        tr.train(2)
    assert tr.opt_steps == 0 and tr.step_count == 0 and tr.status == 'failed'
    assert all(torch.equal(p, before[n]) for n, p in tr.model.named_parameters() if p.requires_grad)


def test_invalid_config_is_refused():
    with pytest.raises(ValueError, match='num_generations'):
        FlowRLConfig(num_generations=0)
    with pytest.raises(ValueError, match='algorithm'):
        Trainer(FlowRLConfig(), algorithm='dpo')


@pytest.mark.parametrize('algorithm', ['flowrl', 'ppo'])  # with a head each: the Z head, the critic
def test_resume_is_exact(tmp_path, algorithm):
    straight = Trainer(cfg(tmp_path, 'a', save_steps=3, algorithm=algorithm)).train(6)
    assert strip_times(straight) == strip_times(load_run(tmp_path / 'a').metrics)
    tr = Trainer(cfg(tmp_path, 'b', save_steps=3, algorithm=algorithm))
    tr.train(3)
    del tr
    tr2 = Trainer.resume(tmp_path / 'b')
    assert tr2.step_count == 3
    resumed = tr2.train(3)
    all_b = load_run(tmp_path / 'b').metrics
    assert [m['step'] for m in all_b] == [1, 2, 3, 4, 5, 6]
    assert strip_times(straight) == strip_times(all_b)
    assert strip_times(straight[3:]) == strip_times(resumed)


def test_z_init_first_batch_starts_log_z_at_the_first_batch_and_resumes_exactly(tmp_path):
    "z_init='first_batch': log Z starts at the first batch's mean residual (tens of nats for exact TB), once; a resume neither repeats it nor may change it."
    tb = dict(reward_form='raw', length_norm='sum', z_init='first_batch', save_steps=2)
    straight = Trainer(cfg(tmp_path, 'a', **tb)).train(4)
    frozen = {**tb, 'z_learning_rate': 0.0, 'save_steps': 0}  # a frozen head shows its start at every step
    default = [m['actor/log_z'] for m in Trainer(cfg(tmp_path, 'd', **{**frozen, 'z_init': 'default'})).train(2)]
    first = [m['actor/log_z'] for m in Trainer(cfg(tmp_path, 'f', **frozen)).train(2)]
    assert max(map(abs, default)) < 1                                  # PyTorch's start: near 0
    assert first[0] > 2 and first[0] == pytest.approx(first[1], abs=1e-5)  # β·r summed in: one constant, set once
    tr = Trainer(cfg(tmp_path, 'b', **tb)); tr.train(2); del tr
    tr2 = Trainer.resume(tmp_path / 'b')
    assert bool(tr2.heads['z'].z_init_done)
    assert strip_times(straight) == strip_times(load_run(tmp_path / 'b').metrics[:2] + tr2.train(2))
    with pytest.raises(ValueError, match='z_init'): Trainer.resume(tmp_path / 'b', z_init='default')


def test_checkpoint_adapter_loads_with_plain_peft(tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM
    from flowrl_nb.model import token_logprobs
    from flowrl_nb.tiny import tiny_model_path
    tr = Trainer(cfg(tmp_path, learning_rate=5e-2, save_steps=0))
    tr.train(2)
    b = tr.engine.generate(['S=9:', 'S=12:'], 2, 3)
    tr.model.eval()
    with torch.no_grad():
        ours = token_logprobs(tr.model, b.prompt_ids, b.prompt_mask, b.completion_ids, b.completion_mask).logp
        plain = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_path()), str(tr.last_checkpoint)).eval()
        theirs = token_logprobs(plain, b.prompt_ids, b.prompt_mask, b.completion_ids, b.completion_mask).logp
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5)


def test_sigkill_mid_run_keeps_checkpoint_and_valid_jsonl(tmp_path):
    run = tmp_path / 'killed'
    script = textwrap.dedent(f'''
        import torch; torch.set_num_threads(1)
        from flowrl_nb.config import FlowRLConfig
        from flowrl_nb.trainer import Trainer
        Trainer(FlowRLConfig(prompts_per_step=4, num_generations=4, num_mini_batches=2, save_steps=2,
                             output_dir={str(run)!r})).train(1000)
    ''')
    p = subprocess.Popen([sys.executable, '-c', script])
    deadline = time.time() + 240
    while time.time() < deadline:
        recs = read_jsonl(run / 'metrics.jsonl') if (run / 'metrics.jsonl').exists() else []
        if len([r for r in recs if r.get('type') == 'step']) >= 5: break
        time.sleep(0.02)
    os.kill(p.pid, signal.SIGKILL); p.wait()
    lines = (run / 'metrics.jsonl').read_text().splitlines()
    for l in lines[:-1]: json.loads(l)       # every complete line is valid JSON
    tr = Trainer.resume(run)
    assert tr.step_count >= 4 and tr.step_count % 2 == 0
    assert [m['step'] for m in load_run(run).metrics] == list(range(1, tr.step_count + 1))
    assert not any(p.name.startswith('.') for p in (run / 'checkpoints').iterdir()), 'half-written checkpoint left behind'
    tr.train(1)
    assert load_run(run).metrics[-1]['step'] == tr.step_count


def test_train_on_a_math_file_with_the_math_reward_and_periodic_eval(tmp_path):
    "The issue-6 wiring: train_file + reward='math' + eval_file/eval_steps, through the same trainer (tiny model)."
    pytest.importorskip('math_verify')
    data = tmp_path / 'sums.jsonl'
    data.write_text(''.join(json.dumps({'problem': f'{a}+{b}', 'answer': str(a + b)}) + '\n' for a, b in [(1, 2), (3, 4), (2, 2), (5, 1)]))
    tr = Trainer(cfg(tmp_path, task='digit_sum', train_file=str(data), reward='math', reward_incorrect=-1.0,
                     eval_file=str(data), eval_steps=2, eval_n=2, max_prompt_length=64, max_completion_length=4,
                     save_steps=0, coverage_steps=0))
    assert tr.rows[0]['answer'] == '3' and 'prompt' in tr.rows[0]
    hist = tr.train(2)
    assert all(m['reward/min'] >= -1.0 and m['reward/max'] <= 1.0 for m in hist)
    assert any(k.startswith('eval/') for k in hist[1]) and not any(k.startswith('eval/') for k in hist[0])
    assert list((tr.run_dir / 'eval').glob('sums*-step2.json'))


def test_new_run_in_a_used_directory_sets_the_old_one_aside(tmp_path):
    "The same output_dir twice: the first run is moved to <dir>.previous-<time>, intact; the second starts clean."
    cfg = FlowRLConfig(**SMALL, save_steps=0, output_dir=str(tmp_path / 'run'))
    first = Trainer(cfg); first.train(2)
    old_lines = (tmp_path / 'run' / 'metrics.jsonl').read_text()
    with pytest.warns(UserWarning, match=r'already held a run; it was moved to .*run\.previous-'):
        second = Trainer(cfg)
    (moved,) = tmp_path.glob('run.previous-*')
    assert (moved / 'metrics.jsonl').read_text() == old_lines            # nothing lost, nothing added
    assert latest_checkpoint(moved).name == 'step-000002'
    second.train(1)
    assert [m['step'] for m in load_run(tmp_path / 'run').metrics] == [1]  # the new log holds only the new run
    assert Trainer.resume(moved).step_count == 2                          # the old run can still be continued


def test_logging_steps_thins_the_log_but_keeps_measured_and_last_steps(tmp_path):
    c = cfg(tmp_path, logging_steps=3, max_steps=7, coverage_steps=2, save_steps=0, task_max_digits=2, max_completion_length=3)
    tr = Trainer(c)
    hist = tr.train()
    assert len(hist) == 7  # every step still runs and returns its metrics
    steps = [m['step'] for m in load_run(tr.run_dir).metrics]
    assert steps == [2, 3, 4, 6, 7]  # 3, 6: every 3rd; 2, 4, 6: coverage measured; 7: the last
    assert all('coverage/correct_mass' in m for m in load_run(tr.run_dir).metrics if m['step'] % 2 == 0)
    # a run stopped between logged steps still logs the step it stopped at
    tr2 = Trainer(cfg(tmp_path, 'b', logging_steps=5, max_steps=9, save_steps=0))
    tr2.train(2)
    assert [m['step'] for m in load_run(tr2.run_dir).metrics] == [2]


class CountingEngine:
    "The HF engine, counting sync_weights calls (an engine with its own weights must hear of every update)."
    def __init__(self, inner): self.inner, self.syncs = inner, 0
    logprobs_match_policy = property(lambda self: self.inner.logprobs_match_policy)
    eos_token_ids = property(lambda self: self.inner.eos_token_ids)
    def generate(self, *a, **k): return self.inner.generate(*a, **k)
    def sync_weights(self, model): self.syncs += 1


def test_sync_weights_is_called_after_every_optimizer_phase_and_after_resume(tmp_path):
    from flowrl_nb.rollout import HFRolloutEngine, RolloutEngine
    tr = Trainer(cfg(tmp_path, save_steps=2))
    tr.engine = eng = CountingEngine(tr.engine)
    assert isinstance(eng, RolloutEngine)
    tr.train(3)
    assert eng.syncs == 3
    tr.load_checkpoint(tr.run_dir / 'checkpoints' / 'step-000002')
    assert eng.syncs == 4
    class NoSync:
        def generate(self, *a, **k): pass
    with pytest.raises(TypeError, match='lacks sync_weights, logprobs_match_policy, eos_token_ids'):
        Trainer(cfg(tmp_path, 'c'), engine=NoSync())


@pytest.mark.parametrize('unit, expect', [('rollout_step', [0.0, 0.0, 0.5, 0.5, 1.0, 1.0]),
                                          ('optimizer_step', [1/3, 2/3, 1.0, 1.0, 1.0, 1.0])])
def test_warmup_units(tmp_path, unit, expect):
    "W = 2 with 2 mini-batches: the released schedule trains the first rollout batch at lr 0, then lr × b/W."
    lrs = []
    tr = Trainer(cfg(tmp_path, warmup_steps=2, warmup_unit=unit, save_steps=0, learning_rate=1e-3))
    step = tr.optimizer.step
    tr.optimizer.step = lambda *a, **k: (lrs.append(tr.optimizer.param_groups[0]['lr']), step(*a, **k))[1]
    hist = tr.train(3)
    assert lrs == pytest.approx([1e-3 * f for f in expect])
    assert [m['optim/lr'] for m in hist] == pytest.approx([1e-3 * f for f in expect[::2]])


def test_loss_agg_applies_to_reinforce_pp(tmp_path):
    a = Trainer(cfg(tmp_path, 'a', algorithm='reinforce_pp', save_steps=0)).train(2)
    b = Trainer(cfg(tmp_path, 'b', algorithm='reinforce_pp', save_steps=0, loss_agg='seq_mean_token_mean')).train(2)
    assert a[0]['reward/mean'] == b[0]['reward/mean']          # the same first batch (same seed) ...
    assert a[0]['actor/final_loss'] != b[0]['actor/final_loss']            # ... aggregated differently


def test_unscorable_samples_are_left_out_of_the_update(tmp_path):
    "A reward that returns None for some samples (TRL: not applicable) trains on the others only; all None: no update."
    def half(completions, **kw): return [None if i % 2 else 1.0 * (len(c) == 2) for i, c in enumerate(completions)]
    tr = Trainer(cfg(tmp_path, save_steps=0), reward_funcs=[half])
    with pytest.warns(RuntimeWarning, match='got no value from any reward function'):
        m = tr.train_step()
    assert m['reward/unscorable'] == 8 and tr.opt_steps == 2 and math.isfinite(m['actor/final_loss'])
    assert sum(math.isnan(r) for r in tr.last_batch['rewards']) == 8
    none = Trainer(cfg(tmp_path, 'b', save_steps=0), reward_funcs=[lambda completions, **kw: [None] * len(completions)])
    with pytest.warns(RuntimeWarning):
        m = none.train_step()
    assert m['reward/unscorable'] == 16 and none.opt_steps == 0 and m['reward/mean'] is None


@pytest.mark.parametrize('algorithm,kl', [('grpo', {'kl_coef': 0.0}), ('reinforce_pp', {'reinforce_pp_kl_coef': 0.0}),
                                          ('flowrl', {})])
def test_ref_forward_when_needed_skips_only_an_unused_reference(tmp_path, algorithm, kl):
    """`ref_forward='when_needed'` leaves out the π_ref pass when the objective has no use for it, and the run is
    otherwise the same run: same weights, same metrics but the reference ones. FlowRL always needs π_ref."""
    runs = {}
    for mode in ('always', 'when_needed'):
        tr = Trainer(cfg(tmp_path, name=mode, algorithm=algorithm, ref_forward=mode, save_steps=0, max_steps=2, **kl))
        calls = []
        import flowrl_nb.trainer as T
        orig = T.reference_logprobs
        T.reference_logprobs = lambda *a, **k: (calls.append(1), orig(*a, **k))[1]
        try: hist = tr.train(2)
        finally: T.reference_logprobs = orig
        runs[mode] = (tr, hist, len(calls))
    (a, ha, ca), (b, hb, cb) = runs['always'], runs['when_needed']
    assert ca > 0 and cb == (ca if algorithm == 'flowrl' else 0)
    for (n, p), (_, q) in zip(a.model.named_parameters(), b.model.named_parameters()):
        assert torch.equal(p, q), n
    skipped = set() if algorithm == 'flowrl' else {'actor/ref_kl', 'actor/ref_log_prob', 'actor/kl_penalty'}
    for ma, mb in zip(strip_times(ha), strip_times(hb)):
        assert {k: v for k, v in ma.items() if k not in skipped and not k.startswith('control/')} == \
               {k: v for k, v in mb.items() if not k.startswith('control/')}
    if algorithm == 'grpo': assert 'actor/ref_kl' in ha[0] and 'actor/ref_kl' not in hb[0]
    assert not (b.expected_metrics() & skipped)
