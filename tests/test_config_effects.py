"""Every field of FlowRLConfig does something a user can see: changing it from a base run changes the run's metrics,
its weights, its files or its log, or it is refused with a clear error on this machine. A field with no probe here
fails `test_every_field_has_a_probe`; the only exceptions are in METADATA, each with its reason.

Each probe trains two steps of the built-in tiny model (about a second) and compares a fingerprint of the run."""
import hashlib, json, math, shutil, time
from pathlib import Path

import pytest, torch
from safetensors.torch import load_file, save_file

from flowrl_nb.config import FIELD_NAMES, FlowRLConfig
from flowrl_nb.tiny import tiny_model_path
from flowrl_nb.trainer import NonFiniteError, Trainer

torch.set_num_threads(1)
BASE = dict(prompts_per_step=4, num_generations=4, num_mini_batches=2, max_steps=2, save_steps=0, coverage_steps=0)
TWO_DIGITS = dict(task_max_digits=2, max_completion_length=3)  # 3,616 completions per prompt: exact coverage in a second

# Fields with no behaviour to probe, and why. Keep this list short: a field belongs here only while no second valid
# value exists on this machine.
METADATA = {}

# field -> (new value, base overrides): the fingerprint of a 2-step run must change
CHANGES = {
    'algorithm': ('grpo', {}),
    'quantization': ('4bit', {}),
    'torch_dtype': ('bfloat16', {}),
    'lora_r': (4, {}),
    'lora_alpha': (64, {}),
    'lora_dropout': (0.1, {}),
    'lora_target_modules': (['q_proj', 'v_proj'], {}),
    'beta': (5.0, {}),
    'kl_coef': (0.5, {'algorithm': 'grpo'}),
    'reinforce_pp_kl_coef': (0.5, {'algorithm': 'reinforce_pp'}),
    'ref_forward': ('when_needed', {'algorithm': 'grpo'}),  # GRPO at kl_coef=0 skips π_ref: no ref_kl in its metrics
    'learning_rate': (1e-2, {}),
    'z_learning_rate': (0.1, {}),
    'weight_decay': (0.5, {}),
    'warmup_steps': (3, {}),
    'warmup_unit': ('rollout_step', {'warmup_steps': 3}),
    'max_grad_norm': (0.01, {}),
    'adam_beta1': (0.5, {}),
    'adam_beta2': (0.9, {}),
    'reward_form': ('raw', {}),
    'length_norm': ('sum', {}),
    'is_mode': ('geo_clip', {}),
    'is_cap': (0.5, {}),
    'epsilon': (0.001, {'is_mode': 'clip'}),
    'epsilon_high': (0.001, {'is_mode': 'clip'}),
    'tis_cap': (1.0, {}),
    'num_generations': (2, {}),
    'prompts_per_step': (2, {}),
    'num_mini_batches': (1, {}),
    'max_steps': (3, {}),
    'max_completion_length': (3, {'task_max_digits': 2}),  # the tiny model writes 3-digit answers: now cut at 3 tokens
    'temperature': (0.5, {}),
    'top_p': (0.9, {}),
    'z_num_layers': (2, {}),
    'z_dropout': (0.0, {}),
    'z_detach': (True, {}),
    'z_exclude_last': (True, {}),
    'z_init': ('first_batch', {'reward_form': 'raw', 'length_norm': 'sum'}),
    'task_min_target': (10, {}),
    'task_max_target': (10, {}),
    'task_max_digits': (2, {'max_completion_length': 4}),
    'task_partial_credit': (True, {}),
    'seed': (1, {}),
    'logging_steps': (2, {'max_steps': 3}),
    'save_steps': (1, {}),
    'coverage_steps': (1, TWO_DIGITS),
    'reward_incorrect': (-1.0, {'train_file': 'gsm8k', 'reward': 'math', 'max_prompt_length': 512}),
    'eval_steps': (1, {'eval_file': 'gsm8k', 'eval_limit': 2, 'eval_n': 2}),
    'eval_file': ('math500', {'eval_file': 'gsm8k', 'eval_steps': 1, 'eval_limit': 2, 'eval_n': 2, 'max_prompt_length': 512}),
    'eval_n': (3, {'eval_file': 'gsm8k', 'eval_steps': 1, 'eval_limit': 2, 'eval_n': 2}),
    'eval_limit': (3, {'eval_file': 'gsm8k', 'eval_steps': 1, 'eval_limit': 2, 'eval_n': 2}),
    'loss_agg': ('seq_mean_token_mean', {'algorithm': 'grpo'}),
    # PPO's critic and GAE
    'gamma': (0.5, {'algorithm': 'ppo'}),
    'lam': (0.5, {'algorithm': 'ppo'}),
    'cliprange_value': (0.001, {'algorithm': 'ppo'}),
    'critic_learning_rate': (0.1, {'algorithm': 'ppo'}),
    'critic_warmup': (1, {'algorithm': 'ppo'}),
    'ppo_kl_coef': (0.5, {'algorithm': 'ppo'}),
    'critic_num_layers': (1, {'algorithm': 'ppo'}),
    'critic_detach': (False, {'algorithm': 'ppo'}),
    'vf_coef': (0.1, {'algorithm': 'ppo', 'critic_detach': False}),
}
# The arith task's fields need a model that reads words and has a chat template: SmolLM2-135M-Instruct, one tiny step
SMOL = dict(model_name_or_path='smollm2-135m-instruct', task='arith', prompts_per_step=2, num_generations=2,
            num_mini_batches=1, max_steps=1, max_completion_length=8, max_prompt_length=128, lora_r=4,
            lora_target_modules=['q_proj', 'v_proj'], temperature=0.7)
CHANGES.update({
    'task': ('arith', {k: v for k, v in SMOL.items() if k != 'task'}),
    'task_max_number': (50, SMOL), 'task_num_ops': (2, SMOL), 'task_ops': ('+', SMOL),
    'task_num_problems': (3, SMOL), 'task_num_heldout': (5, SMOL),
})
# field -> (new value, base overrides, the error it must raise on this machine)
REFUSED = {
    'rollout_engine': ('vllm', {}, 'bash tools/vllm_venv.sh creates one'),  # the main venv has no vLLM (tests/test_vllm.py has)
    'max_prompt_length': (3, {}, 'more than max_prompt_length=3'),
    # the vllm_* fields act only on the vLLM engine (their effects are tested in tests/test_vllm.py); with the HF engine
    # a changed value is refused rather than ignored
    'vllm_dtype': ('bfloat16', {}, "vllm_dtype='bfloat16' applies only to rollout_engine='vllm'"),
    'vllm_gpu_memory_utilization': (0.5, {}, "vllm_gpu_memory_utilization=0.5 applies only to rollout_engine='vllm'"),
    'vllm_enable_sleep_mode': (True, {}, "vllm_enable_sleep_mode=True applies only to rollout_engine='vllm'"),
}
if not torch.cuda.is_available():
    REFUSED['device'] = ('cuda', {}, "device='cuda' but this machine has no CUDA GPU")
else:
    CHANGES['device'] = ('cuda', {})
CUSTOM = ('model_name_or_path', 'gradient_checkpointing', 'max_nonfinite_steps', 'train_file', 'reward', 'output_dir',
          'reward_timeout', 'max_reward_error_batches', 'coverage_mode')


def _cfg(tmp_path, name, **kw):
    kw = {**BASE, **kw}
    if kw.get('eval_file') or kw.get('train_file'): kw.setdefault('max_prompt_length', 512)  # GSM8K questions are long
    return FlowRLConfig(**kw, output_dir=str(tmp_path / name))


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def fingerprint(tr: Trainer) -> dict:
    "What a user can see of a finished run: logged metrics (no wall-clock times), weights, files, events."
    from flowrl_nb.runlog import load_run
    run = load_run(tr.run_dir)
    metrics = [{k: v for k, v in m.items() if not (k.startswith('time') or k.startswith('perf/') or k == 'type')
                and not k.startswith('control/')} for m in run.metrics]
    weights = {n: round(float(p.detach().double().sum()), 10) for n, p in tr.model.named_parameters() if p.requires_grad}
    if tr.z_head is not None: weights['z'] = round(float(sum(p.detach().double().sum() for p in tr.z_head.parameters())), 10)
    files = sorted(str(p.relative_to(tr.run_dir)) for p in tr.run_dir.rglob('*') if p.is_file() and p.name != 'config.yaml')
    return dict(metrics=metrics, weights=weights, files=files, dtypes=sorted({str(p.dtype) for p in tr.model.parameters()}),
                lengths=tr.last_batch and tr.last_batch['lengths'])


_BASES = {}

def _run(tmp_path, name, **kw) -> dict:
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        tr = Trainer(_cfg(tmp_path, name, **kw))
        tr.train(progress=False)
    return fingerprint(tr)


def _base(tmp_path_factory, overrides: dict) -> dict:
    key = json.dumps(overrides, sort_keys=True)
    if key not in _BASES: _BASES[key] = _run(tmp_path_factory.mktemp('base'), 'run', **overrides)
    return _BASES[key]


def test_every_field_has_a_probe():
    probed = set(CHANGES) | set(REFUSED) | set(CUSTOM) | set(METADATA)
    assert set(FIELD_NAMES) - probed == set(), f'fields without a probe: {sorted(set(FIELD_NAMES) - probed)}'
    assert probed - set(FIELD_NAMES) == set(), f'probes of fields that do not exist: {sorted(probed - set(FIELD_NAMES))}'


@pytest.mark.parametrize('field', sorted(CHANGES))
def test_changing_the_field_changes_the_run(field, tmp_path, tmp_path_factory):
    value, overrides = CHANGES[field]
    assert getattr(FlowRLConfig(**overrides), field) != value, f'{field}={value!r} is its base value: nothing is probed'
    base = _base(tmp_path_factory, overrides)
    changed = _run(tmp_path, 'changed', **{**overrides, field: value})
    diff = [k for k in base if base[k] != changed[k]]
    assert diff, f'changing {field} to {value!r} changed nothing a user can see (metrics, weights, files, dtypes)'


@pytest.mark.parametrize('field', sorted(REFUSED))
def test_a_value_this_machine_cannot_honour_is_refused(field, tmp_path):
    value, overrides, message = REFUSED[field]
    with pytest.raises((ValueError, ImportError), match=message.replace('(', r'\(').replace(')', r'\)')):
        tr = Trainer(_cfg(tmp_path, 'run', **{**overrides, field: value}))
        tr.train(progress=False)


def test_model_name_or_path(tmp_path, tmp_path_factory):
    other = tmp_path / 'other-model'
    shutil.copytree(tiny_model_path(), other)
    w = load_file(str(other / 'model.safetensors'))
    w = {k: v + 0.05 * torch.randn_like(v) if v.is_floating_point() and v.dim() == 2 else v for k, v in w.items()}
    save_file(w, str(other / 'model.safetensors'), metadata={'format': 'pt'})
    assert _run(tmp_path, 'changed', model_name_or_path=str(other)) != _base(tmp_path_factory, {})


def test_coverage_mode(tmp_path):
    "Same numbers by design (the same walk of the same weights): what changes is where it runs and how it reaches the log."
    from flowrl_nb.coverage import CoverageHook
    from flowrl_nb.runlog import read_jsonl
    steps = {}
    for mode in ('inline', 'background'):
        tr = Trainer(_cfg(tmp_path, mode, coverage_steps=1, coverage_mode=mode, **TWO_DIGITS))
        assert next(h for h in tr.hooks if isinstance(h, CoverageHook)).background == (mode == 'background')
        tr.train(progress=False)
        steps[mode] = [(r['step'], 'coverage/correct_mass' in r) for r in read_jsonl(tr.run_dir / 'metrics.jsonl') if r['type'] == 'step']
    assert steps['inline'] == [(1, True), (2, True)]
    # background: each step's record, then its coverage when it lands (step 1's may land after step 2's record)
    assert sorted(steps['background']) == [(1, False), (1, True), (2, False), (2, True)]
    assert [s for s, cov in steps['background'] if cov] == [1, 2]   # coverage lands in step order


def test_gradient_checkpointing(tmp_path):
    "Same numbers by design (recompute instead of store): what changes is that the model checkpoints its activations."
    tr = Trainer(_cfg(tmp_path, 'gc', gradient_checkpointing=True))
    base = tr.model.get_base_model()
    on = getattr(base, 'is_activation_checkpointing', None)
    assert (on if on is not None else base.is_gradient_checkpointing) is True
    plain = Trainer(_cfg(tmp_path, 'plain')).model.get_base_model()
    on = getattr(plain, 'is_activation_checkpointing', None)
    assert (on if on is not None else plain.is_gradient_checkpointing) is False


@pytest.mark.parametrize('limit, raises', [(1, True), (3, False)])
def test_max_nonfinite_steps(tmp_path, limit, raises):
    "A NaN gradient on every step: max_nonfinite_steps=1 stops at once, 3 tolerates two skipped optimizer steps."
    tr = Trainer(_cfg(tmp_path, 'run', max_nonfinite_steps=limit))
    p = next(p for p in tr.model.parameters() if p.requires_grad)
    p.register_hook(lambda g: g * math.nan)
    if raises:
        with pytest.raises(NonFiniteError): tr.train_step()
    else:
        m = tr.train_step()
        assert m['optim/skipped_steps'] == 2 and tr.opt_steps == 0


def test_train_file_and_reward(tmp_path):
    plain = Trainer(_cfg(tmp_path, 'a'))
    gsm = Trainer(_cfg(tmp_path, 'b', train_file='gsm8k', reward='math'))
    assert plain.rows[0] == {'prompt': 'S=5:', 'target': 5}
    assert set(gsm.rows[0]) == {'prompt', 'answer', 'id'} and 'Janet' in gsm.rows[0]['prompt'] and len(gsm.rows) == 1319
    assert (plain.rewards.names, gsm.rewards.names) == (['digit_sum'], ['math'])
    m = gsm.train_step()  # the math reward scores real completions (the tiny model cannot do GSM8K: all wrong)
    assert m['reward/math'] == 0.0 and m['reward/errors'] == 0 and 'reward/math/no_answer' in m
    gsm.rewards.fns[0].close()


def test_output_dir(tmp_path):
    tr = Trainer(_cfg(tmp_path, 'here'))
    tr.train(progress=False)
    assert tr.run_dir == tmp_path / 'here' and (tmp_path / 'here' / 'metrics.jsonl').exists()
    assert (tmp_path / 'here' / 'checkpoints' / 'step-000002').is_dir()


def test_reward_timeout(tmp_path):
    "A reward that takes 0.5 s from its second batch on: over a 0.2 s limit its batch fails; under the default it scores."
    def slow(completions, **kw):
        slow.calls += 1
        if slow.calls > 1: time.sleep(0.5)
        return [1.0] * len(completions)
    slow.calls = 0
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        hist = Trainer(_cfg(tmp_path, 'a', reward_timeout=0.2), reward_funcs=[slow]).train(progress=False)
    assert [m['reward/errors'] for m in hist] == [0, 16]
    slow.calls = 0
    assert [m['reward/errors'] for m in Trainer(_cfg(tmp_path, 'b'), reward_funcs=[slow]).train(progress=False)] == [0, 0]


@pytest.mark.parametrize('limit, stops', [(1, True), (3, False)])
def test_max_reward_error_batches(tmp_path, limit, stops):
    from flowrl_nb.rewards import RewardError
    def down(completions, **kw):
        down.calls += 1
        if down.calls > 1: raise ConnectionError('down')
        return [1.0] * len(completions)
    down.calls = 0
    import warnings
    tr = Trainer(_cfg(tmp_path, 'run', max_reward_error_batches=limit), reward_funcs=[down])
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        if stops:
            with pytest.raises(RewardError, match='every sample of the last 1 batch'): tr.train(progress=False)
        else: assert len(tr.train(progress=False)) == 2
