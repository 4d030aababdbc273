"""FlowRL on TRL (`flowrl_nb.trl`): the same loss and gradients as flowrl_nb's trainer, checkpoints that resume,
live controls, and two processes that end with identical weights. CPU, the built-in tiny model."""
import json, math, os, subprocess, sys, time
from pathlib import Path
import pytest, torch

trl = pytest.importorskip('trl', reason='flowrl_nb[trl] not installed')
from datasets import Dataset
from peft import LoraConfig
from safetensors.torch import load_file
from transformers import TrainerCallback
from flowrl_nb.algorithms import Experience, FlowRL
from flowrl_nb.model import load_z_head, reference_logprobs, resolve_model_path, token_logprobs
from flowrl_nb.objective import group_advantages
from flowrl_nb.runlog import load_run
from flowrl_nb.task import DigitSumTask
from flowrl_nb.trl import FlowRLGRPOConfig, FlowRLGRPOTrainer

ROOT = Path(__file__).resolve().parents[1]
TASK = DigitSumTask()


def make_trainer(out, lora_dropout=0.0, eval_dataset=None, **kw):
    args = FlowRLGRPOConfig(**{**dict(output_dir=str(out), per_device_train_batch_size=16, num_generations=8,
                                      max_completion_length=4, learning_rate=1e-3, z_learning_rate=1e-2, max_steps=2,
                                      logging_steps=1, save_strategy='no', report_to='none', use_cpu=True, bf16=False,
                                      gradient_checkpointing=False, seed=0, z_dropout=0.0), **kw})
    return FlowRLGRPOTrainer(model=resolve_model_path('tiny'), reward_funcs=TASK.reward, args=args,
                             train_dataset=Dataset.from_list(TASK.rows(n=256, seed=0)), eval_dataset=eval_dataset,
                             peft_config=LoraConfig(r=8, lora_alpha=16, lora_dropout=lora_dropout,
                                                    target_modules='all-linear', task_type='CAUSAL_LM'))


def trainable(tr):
    return {n: p for n, p in tr.model.named_parameters() if p.requires_grad}


def a_batch(tr, n_groups=2, group=4, seed=0):
    "A rollout batch built by hand: left-padded prompts of different lengths, completions of 1-4 tokens, π_old ≠ π_θ."
    g = torch.Generator().manual_seed(seed)
    tok = tr.processing_class
    prompts = [TASK.prompt(t) for t in (5, 17)[:n_groups] for _ in range(group)]
    enc = tok(prompts, return_tensors='pt', padding=True, padding_side='left', add_special_tokens=False)
    B, T = len(prompts), 4
    C = torch.randint(3, tr.model.config.vocab_size, (B, T), generator=g)
    lengths = torch.randint(1, T + 1, (B,), generator=g)
    mask = (torch.arange(T)[None] < lengths[:, None]).long()
    C = torch.where(mask.bool(), C, torch.full_like(C, tok.pad_token_id))
    P, PM = enc['input_ids'], enc['attention_mask']
    assert (PM == 0).any(), 'the batch should exercise left padding'
    temp = tr.flowrl_config.temperature
    with torch.no_grad():
        logp = token_logprobs(tr.model, P, PM, C, mask, temperature=temp).logp
        old = logp + 0.3 * torch.randn(B, T, generator=g) * mask  # sampled by an older policy
        ref = reference_logprobs(tr.model, P, PM, C, mask, temperature=temp)
    rewards = torch.tensor([1., 0., 1., 1., 0., 0., 1., 0.][:B])
    return P, PM, C, mask, old, ref, rewards


def trl_inputs(P, PM, C, mask, old, ref, rewards):
    "The micro-batch TRL's `_generate_and_score_completions` hands to `compute_loss`, with FlowRLGRPOTrainer's additions."
    return dict(prompt_ids=P, prompt_mask=PM, completion_ids=C, completion_mask=mask, advantages=group_advantages(rewards, 4),
                old_per_token_logps=old, ref_per_token_logps=ref, flowrl_rewards=rewards, num_items_in_batch=mask.sum())


@pytest.mark.parametrize('variant', [dict(), dict(is_mode='clip', epsilon_high=0.28, temperature=0.7),
                                     dict(reward_form='raw', length_norm='sum', flowrl_beta=2.0, is_mode='none')])
def test_loss_and_gradients_equal_flowrl_nb_trainer(tmp_path, variant):
    """On the same rollout batch, FlowRLGRPOTrainer's loss and its gradients on the adapter and the Z head equal
    flowrl_nb's `Trainer._update` path (`token_logprobs` with the Z head, then `FlowRL.loss`)."""
    tr = make_trainer(tmp_path, **variant)
    tr.model.train()
    P, PM, C, mask, old, ref, rewards = a_batch(tr)
    adv = group_advantages(rewards, 4)
    params = trainable(tr)
    assert any('flowrl_z_head' in n for n in params) and any('lora_' in n for n in params)

    # flowrl_nb's trainer: Experience, token_logprobs(..., **algorithm.forward_kwargs()), algorithm.loss
    alg = FlowRL(tr.flowrl_config); alg.z_head = tr.z_head
    exp = Experience(P, PM, C, mask.float(), old, ref, old, rewards, adv=adv, group_size=4)
    out = token_logprobs(tr.model, P, PM, C, mask.float(), temperature=tr.flowrl_config.temperature,
                         **alg.forward_kwargs())
    loss_a, metrics_a = alg.loss(out, exp, tr.controls.snapshot())
    grads_a = torch.autograd.grad(loss_a, list(params.values()))

    # TRL's path: the inputs TRL's _generate_and_score_completions hands to compute_loss
    inputs = trl_inputs(P, PM, C, mask, old, ref, rewards)
    tr.current_gradient_accumulation_steps = 1
    loss_b = tr.compute_loss(tr.model, inputs)
    grads_b = torch.autograd.grad(loss_b, list(params.values()))

    assert float(loss_a) > 0 and math.isfinite(float(loss_a))
    torch.testing.assert_close(loss_b, loss_a, rtol=1e-5, atol=1e-6)
    for (name, _), ga, gb in zip(params.items(), grads_a, grads_b):
        torch.testing.assert_close(gb, ga, rtol=1e-4, atol=1e-6, msg=lambda m: f'{name}: {m}')
    head_grads = [g for (n, _), g in zip(params.items(), grads_a) if 'flowrl_z_head' in n]
    assert any(float(g.abs().max()) > 0 for g in head_grads), 'the Z head got no gradient: the comparison is vacuous'
    assert tr._metrics['train']['actor/final_loss'][-1] == pytest.approx(metrics_a['final_loss'], rel=1e-5)


def test_gradient_accumulation_divides_the_micro_batch_loss(tmp_path):
    "With k accumulation steps, a micro-batch's loss is 1/k of its FlowRL loss (TRL's convention), so a step averages."
    tr = make_trainer(tmp_path)
    P, PM, C, mask, old, ref, rewards = a_batch(tr)
    inputs = trl_inputs(P, PM, C, mask, old, ref, rewards)
    tr.model.train()
    tr.current_gradient_accumulation_steps = 1
    one = float(tr.compute_loss(tr.model, inputs))
    tr.current_gradient_accumulation_steps = 4
    assert float(tr.compute_loss(tr.model, inputs)) == pytest.approx(one / 4, rel=1e-6)


def test_unscorable_completions_leave_the_loss(tmp_path):
    "A completion every reward function refused (NaN) is left out, as flowrl_nb's trainer drops it; not scored as r̂ = 0."
    tr = make_trainer(tmp_path)
    tr.model.train(); tr.current_gradient_accumulation_steps = 1
    P, PM, C, mask, old, ref, rewards = a_batch(tr)
    rewards = rewards.clone(); rewards[[1, 6]] = math.nan
    full = trl_inputs(P, PM, C, mask, old, ref, rewards)
    keep = [0, 2, 3, 4, 5, 7]
    kept = {k: (v[keep] if torch.is_tensor(v) and v.dim() and v.shape[0] == 8 else v) for k, v in full.items()}
    torch.testing.assert_close(tr.compute_loss(tr.model, full), tr.compute_loss(tr.model, kept))


def test_config_refuses_what_flowrl_would_ignore(tmp_path):
    base = dict(output_dir=str(tmp_path), use_cpu=True, bf16=False, report_to='none')
    with pytest.raises(ValueError, match='flowrl_beta'): FlowRLGRPOConfig(**base, beta=0.04)
    with pytest.raises(ValueError, match="scale_rewards='batch'"): FlowRLGRPOConfig(**base, scale_rewards='batch')
    with pytest.raises(ValueError, match='ddp_find_unused_parameters'): FlowRLGRPOConfig(**base, ddp_find_unused_parameters=True)
    with pytest.raises(ValueError, match='is_mode'): FlowRLGRPOConfig(**base, is_mode='clipped')
    with pytest.raises(ValueError, match='tis_cap'): FlowRLGRPOConfig(**base, tis_cap='three')
    assert FlowRLGRPOConfig(**base, tis_cap='2.5').flowrl_config().tis_cap == 2.5
    assert FlowRLGRPOConfig(**base, tis_cap='none', use_vllm=False).flowrl_config(use_vllm=True).tis_cap is None
    assert FlowRLGRPOConfig(**base).flowrl_config(use_vllm=True).tis_cap == 3.0
    assert FlowRLGRPOConfig(**base, vllm_importance_sampling_correction=False).flowrl_config(use_vllm=True).tis_cap is None


def test_trainer_refuses_an_outside_optimizer_and_a_full_model(tmp_path):
    args = FlowRLGRPOConfig(output_dir=str(tmp_path), use_cpu=True, bf16=False, report_to='none')
    ds = Dataset.from_list(TASK.rows(n=8, seed=0))
    with pytest.raises(ValueError, match='optimizers'):
        FlowRLGRPOTrainer(resolve_model_path('tiny'), TASK.reward, args, train_dataset=ds,
                          peft_config=LoraConfig(r=8, target_modules='all-linear'), optimizers=(torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1), None))
    with pytest.raises(ValueError, match='peft_config'):
        FlowRLGRPOTrainer(resolve_model_path('tiny'), TASK.reward, args, train_dataset=ds)
    with pytest.raises(TypeError, match='FlowRLGRPOConfig'):
        FlowRLGRPOTrainer(resolve_model_path('tiny'), TASK.reward, trl.GRPOConfig(output_dir=str(tmp_path), use_cpu=True,
                          bf16=False, report_to='none'), train_dataset=ds, peft_config=LoraConfig(r=8, target_modules='all-linear'))


class StopAfter(TrainerCallback):
    def __init__(self, n): self.n = n
    def on_step_end(self, args, state, control, **kw):
        if state.global_step >= self.n: control.should_training_stop = True


def test_resume_restores_head_and_controls_and_continues_the_same_run(tmp_path):
    """A run stopped after step 1 and resumed from its checkpoint ends step 2 with the same adapter and Z head as the
    run that never stopped; the live change made before step 1 is in force after the resume."""
    straight = make_trainer(tmp_path / 'straight', save_strategy='steps', save_steps=1)
    straight.controls.beta = 10.0
    straight.train()
    first = make_trainer(tmp_path / 'stopped', save_strategy='steps', save_steps=1)
    first.add_callback(StopAfter(1))  # the run is interrupted after its first step, with the same schedule
    first.controls.beta = 10.0
    first.train()
    assert first.state.global_step == 1
    ckpt = tmp_path / 'stopped' / 'checkpoint-1'
    saved = load_z_head(ckpt)
    assert json.loads((ckpt / 'flowrl_controls.json').read_text())['values']['beta'] == 10.0
    resumed = make_trainer(tmp_path / 'stopped', save_strategy='steps', save_steps=1)
    assert resumed.controls.beta == 15.0
    resumed.train(resume_from_checkpoint=str(ckpt))
    assert resumed.controls.beta == 10.0 and resumed.state.global_step == 2
    a, b = trainable(straight), trainable(resumed)
    for n in a: torch.testing.assert_close(b[n], a[n], rtol=1e-5, atol=1e-6, msg=lambda m: f'{n}: {m}')
    moved = [n for n in a if 'flowrl_z_head' in n and not torch.equal(a[n].detach(), saved.state_dict()[n.split('flowrl_z_head.')[1]])]
    assert moved, 'step 2 did not move the Z head past its checkpoint: the comparison would not see a lost head'


def test_live_controls_apply_at_the_next_step_and_are_logged(tmp_path):
    tr = make_trainer(tmp_path, max_steps=3)
    tr.controls.set(learning_rate=5e-4, z_learning_rate=0.1, is_mode='clip')
    with pytest.raises(ValueError, match='temperature'): tr.controls.temperature = 0.5
    tr.train()
    groups = {g['name']: g for g in tr.optimizer.param_groups}
    sched = tr.lr_scheduler
    # linear decay over 3 steps from the new base rates: after 3 scheduler steps the factor is 0
    assert sched.base_lrs[-1] == 0.1 and sched.base_lrs[0] == 5e-4
    assert tr._live['is_mode'] == 'clip'
    ev = load_run(tmp_path).events
    assert [(e['step'], e['name'], e['new']) for e in ev] == [(1, 'learning_rate', 5e-4), (1, 'z_learning_rate', 0.1), (1, 'is_mode', 'clip')]
    m = load_run(tmp_path).metrics
    assert m[0]['optim/lr'] == pytest.approx(5e-4) and len(m) == 3
    assert 'actor/clip_frac_high' in m[0] and all(math.isfinite(r['actor/final_loss']) for r in m)
    assert set(groups) == {'policy', 'z'}


LAUNCHERS = {  # how a 2-process CPU run is started: accelerate's own command (MPI on a CPU), and the launcher
    # accelerate uses for several GPUs
    'accelerate': lambda hostfile: ['accelerate', 'launch', '--cpu', '--num_processes', '2', '--num_machines', '1',
                                    '--mixed_precision', 'no', '--dynamo_backend', 'no', '--mpirun_hostfile', str(hostfile)],
    'torchrun': lambda hostfile: [sys.executable, '-m', 'torch.distributed.run', '--nproc_per_node', '2',
                                  '--master_port', '29531'],
}


@pytest.mark.parametrize('launcher', list(LAUNCHERS))
def test_two_processes_end_with_identical_weights(tmp_path, launcher):
    """Two CPU processes (gloo), started with `accelerate launch --cpu --num_processes 2` (which on a CPU runs
    through MPI's mpirun: tools/test.sh installs Debian's openmpi-bin) or torch.distributed.run: each rank trains on its
    own prompts, and the gradient all-reduce (the Z head's included) keeps them equal."""
    import shutil
    if launcher == 'accelerate' and shutil.which('mpirun') is None:
        pytest.skip('mpirun is not installed (apt-get install -y openmpi-bin): accelerate launch --cpu needs MPI for 2 processes')
    hostfile = tmp_path / 'hostfile'; hostfile.write_text('localhost slots=2\n')
    env = {**os.environ, 'PYTHONPATH': str(ROOT), 'OMP_NUM_THREADS': '1',
           'OMPI_ALLOW_RUN_AS_ROOT': '1', 'OMPI_ALLOW_RUN_AS_ROOT_CONFIRM': '1'}  # CI runs as root
    bin_dir = Path(sys.executable).parent
    cmd = LAUNCHERS[launcher](hostfile)
    if cmd[0] == 'accelerate': cmd[0] = str(bin_dir / 'accelerate')
    cmd += [str(ROOT / 'examples/trl/flowrl_trl.py'), '--max-steps', '2', '--output-dir', str(tmp_path / 'out'),
            '--dump-weights', str(tmp_path / 'w')]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    a, b = load_file(str(tmp_path / 'w/rank0.safetensors')), load_file(str(tmp_path / 'w/rank1.safetensors'))
    pa, pb = a.pop('last_batch.prompt_ids'), b.pop('last_batch.prompt_ids')
    assert not torch.equal(pa, pb), 'both ranks trained on the same prompts: equal weights would prove nothing'
    for w in (a, b):  # each rank's r̂ is the group advantage of its own rows' rewards: the per-rank slice is right
        r, adv = w.pop('last_batch.rewards'), w.pop('last_batch.adv')
        torch.testing.assert_close(adv, group_advantages(r, 8).to(adv.dtype))
    assert a.keys() == b.keys() and any('flowrl_z_head' in k for k in a) and any('lora_B' in k for k in a)
    assert [k for k in a if not torch.equal(a[k], b[k])] == []
    assert all(float(a[k].abs().max()) > 0 for k in a if 'lora_B' in k), 'the adapter did not train (lora_B still 0)'
    steps = load_run(tmp_path / 'out').metrics
    assert len(steps) == 2 and all(math.isfinite(s['actor/final_loss']) and math.isfinite(s['reward/mean']) for s in steps)
    assert (tmp_path / 'out' / 'z_head.safetensors').exists()


def test_vllm_weight_sync_skips_the_head(tmp_path):
    "TRL's vLLM sync walks the PEFT model's parameters; with the head registered there, the walk must leave it out."
    from trl.generation.vllm_generation import VLLMGeneration
    from flowrl_nb.trl import _skip_head_in_vllm_sync
    assert callable(getattr(VLLMGeneration, '_iter_named_params', None)), 'TRL renamed the walk flowrl_nb.trl filters'
    tr = make_trainer(tmp_path)
    gen = type('Gen', (), {})()
    gen._iter_named_params = lambda: iter(tr.model.named_parameters())
    before = [n for n, _ in gen._iter_named_params()]
    _skip_head_in_vllm_sync(gen)
    after = [n for n, _ in gen._iter_named_params()]
    assert any('flowrl_z_head' in n for n in before)
    assert after == [n for n in before if 'flowrl_z_head' not in n] and len(after) > 0


def _wait(cond, timeout=120):
    t = time.time()
    while not cond():
        assert time.time() - t < timeout, 'timed out'
        time.sleep(0.02)


def test_dashboard_drives_a_trl_run(tmp_path):
    "flowrl_nb's Dashboard on `TRLRun(trainer)`: start, a live β change, a refused temperature, pause and resume."
    from flowrl_nb.dashboard import Dashboard
    from flowrl_nb.trl import TRLRun
    tr = make_trainer(tmp_path, max_steps=5)
    run = TRLRun(tr)
    d = Dashboard(run, refresh=None)
    try:
        d.start()
        _wait(lambda: run.step_count >= 1)
        d.controls['beta'].value = 5.0
        assert tr.controls.pending.get('beta', tr.controls.beta) == 5.0  # pending, or applied already by the next step
        d.controls['temperature'].value = 0.5
        assert 'temperature' in d._errors['temperature'].value and d.controls['temperature'].value == 1.0
        d.toggle_pause()
        _wait(lambda: run.status == 'paused')
        held = run.step_count
        time.sleep(0.5)
        assert run.step_count == held and run.running
        d.toggle_pause()
        run._thread.join(120)
        assert run.status == 'finished' and run.step_count == 5 and run.error is None, repr(run.error)
        d.refresh(force=True)
        assert 'Recent completions' in d.table.value and 'S=' in d.table.value
        assert 'finished' in d.status_line.value and 'step 5 / 5' in d.status_line.value
        ev = load_run(tmp_path).events
        assert [(e['name'], e['new']) for e in ev] == [('beta', 5.0)] and ev[0]['step'] > 1
    finally: d.close()


def test_trl_run_stop_saves_and_start_resumes(tmp_path):
    from flowrl_nb.trl import TRLRun
    tr = make_trainer(tmp_path, max_steps=4)
    run = TRLRun(tr)
    run.start()
    _wait(lambda: run.step_count >= 1)
    assert run.stop(wait=True, timeout=120)
    stopped_at = run.step_count
    assert run.status == 'stopped' and 1 <= stopped_at < 4
    assert run.last_checkpoint is not None and run.last_checkpoint.name == f'checkpoint-{stopped_at}'
    assert (run.last_checkpoint / 'z_head.safetensors').exists()
    run.start()
    run._thread.join(120)
    assert run.status == 'finished' and run.step_count == 4 and run.error is None, ''.join(__import__('traceback').format_exception(run.error))
    steps = [m['step'] for m in load_run(tmp_path).metrics]
    assert steps == sorted(steps) and steps[-1] == 4


def test_an_all_unscorable_micro_batch_keeps_the_collectives(tmp_path):
    """Every completion unscorable: loss 0 with zero gradients, and the same metric names logged (NaN), so that in a
    multi-process run this rank calls the same gathers as the others."""
    tr = make_trainer(tmp_path)
    tr.model.train(); tr.current_gradient_accumulation_steps = 1
    P, PM, C, mask, old, ref, rewards = a_batch(tr)
    tr.compute_loss(tr.model, trl_inputs(P, PM, C, mask, old, ref, rewards))
    names = {k for k, v in tr._metrics['train'].items() if len(v) == 1}
    nan = torch.full_like(rewards, math.nan)
    loss = tr.compute_loss(tr.model, trl_inputs(P, PM, C, mask, old, ref, nan))
    grads = torch.autograd.grad(loss, list(trainable(tr).values()), allow_unused=False)
    assert float(loss) == 0.0 and all(float(g.abs().max()) == 0.0 for g in grads)
    assert {k for k, v in tr._metrics['train'].items() if len(v) == 2} == names and 'actor/final_loss' in names
    assert math.isnan(tr._metrics['train']['actor/final_loss'][-1])


def test_a_peft_model_with_its_own_adapter_keeps_it_as_the_reference(tmp_path):
    "A PeftModel passed in with a trained adapter: π_ref is a frozen copy of that adapter (TRL's way), not the bare base."
    from peft import get_peft_model
    from transformers import AutoModelForCausalLM
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(resolve_model_path('tiny')),
                           LoraConfig(r=8, lora_alpha=16, target_modules='all-linear', task_type='CAUSAL_LM'))
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if 'lora_B' in n: p.copy_(0.05 * torch.randn(p.shape, generator=g))  # an adapter that moved the policy
    args = FlowRLGRPOConfig(output_dir=str(tmp_path), per_device_train_batch_size=16, num_generations=8,
                            max_completion_length=4, use_cpu=True, bf16=False, report_to='none', save_strategy='no',
                            gradient_checkpointing=False)
    tr = FlowRLGRPOTrainer(model, TASK.reward, args, train_dataset=Dataset.from_list(TASK.rows(n=32, seed=0)))
    assert 'ref' in tr.model.peft_config and not any(p.requires_grad for n, p in tr.model.named_parameters() if '.ref.' in n)
    P, PM, C, mask, *_ = a_batch(tr)
    out = dict(prompt_ids=P, prompt_mask=PM, completion_ids=C, completion_mask=mask)
    from flowrl_nb.trl import _reference_logps
    tr.model.eval()
    ref = _reference_logps(tr, out, 8)
    with torch.no_grad():
        policy = token_logprobs(tr.model, P, PM, C, mask).logp
        base = reference_logprobs(tr.model, P, PM, C, mask)
    m = mask.bool()
    torch.testing.assert_close(ref[m], policy[m], rtol=1e-4, atol=1e-5)
    assert float((base[m] - policy[m]).abs().max()) > 1e-3, 'the adapter did not move the policy: the test sees nothing'


def test_live_lr_changes_refused_where_the_schedule_cannot_take_them(tmp_path):
    tr = make_trainer(tmp_path, lr_scheduler_type='reduce_lr_on_plateau', lr_scheduler_kwargs={}, eval_strategy='steps',
                      eval_steps=10, eval_dataset=Dataset.from_list(TASK.rows(n=8, seed=1)))
    with pytest.raises(ValueError, match='reduce_lr_on_plateau'): tr.controls.learning_rate = 1e-4
    tr.controls.beta = 3.0  # the rest stay live
    assert tr.controls.pending == {'beta': 3.0}
