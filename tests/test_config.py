"Validation, parsing, live changes and YAML/JSON round trips of `flowrl_nb.config.FlowRLConfig`."
import dataclasses, json

import pytest
from hypothesis import given, settings, strategies as st

from flowrl_nb.config import (FIELD_CHECKS, FIELD_NAMES, IS_MODES, LIVE_FIELDS, LOSS_AGGS, LORA_TARGETS, FlowRLConfig)


# --- every validation error, with its exact message -------------------------------------------------------------
BAD = [
    (dict(reward='maths'), "reward must be one of 'task', 'math', got 'maths'"),
    (dict(reward='math'), 'reward="math" needs train_file'),
    (dict(eval_steps=5), 'eval_steps=5 needs eval_file'),
    (dict(eval_n=0), 'eval_n must be >= 1, got 0'),
    (dict(eval_limit=0), 'eval_limit must be >= 1, got 0'),
    (dict(train_file=' '), "train_file must be a non-empty string, got ' '"),
    (dict(eval_file=''), "eval_file must be a non-empty string, got ''"),
    (dict(reward_form='advantage'), "reward_form must be one of 'adv', 'raw', got 'advantage'"),
    (dict(length_norm='total'), "length_norm must be one of 'mean', 'sum', got 'total'"),
    (dict(algorithm='dpo'), "algorithm must be one of 'flowrl', 'grpo', 'reinforce_pp', 'ppo', got 'dpo'"),
    (dict(gamma=1.5), 'gamma must be in [0, 1], got 1.5'),
    (dict(lam=-0.1), 'lam must be in [0, 1], got -0.1'),
    (dict(cliprange_value=0), 'cliprange_value must be in (0, 1e+06], got 0.0'),
    (dict(critic_warmup=-1), 'critic_warmup must be >= 0, got -1'),
    (dict(vf_coef=0), 'vf_coef must be in (0, 1e+06], got 0.0'),
    (dict(vf_coef=0.5), 'vf_coef=0.5 weighs the value loss against the policy loss in a shared body'),
    (dict(critic_learning_rate=11), 'critic_learning_rate must be in [0, 10], got 11.0'),
    (dict(ppo_kl_coef=-0.1), 'ppo_kl_coef must be in [0, 1000], got -0.1'),
    (dict(critic_num_layers=0), 'critic_num_layers must be >= 1, got 0'),
    (dict(algorithm='gpro'), '(did you mean "grpo"?)'),
    (dict(model_name_or_path=' '), "model_name_or_path must be a non-empty string, got ' '"),
    (dict(quantization='4-bit'), "quantization must be one of None, '4bit', '8bit', got '4-bit' (did you mean \"4bit\"?)"),
    (dict(torch_dtype='fp16'), "torch_dtype must be one of 'auto', 'float32', 'bfloat16', 'float16', got 'fp16'"),
    (dict(gradient_checkpointing='maybe'), "gradient_checkpointing must be true or false, got 'maybe'"),
    (dict(lora_r=0), 'lora_r must be in [1, 4096], got 0'),
    (dict(lora_r=10**6), 'lora_r must be in [1, 4096], got 1000000'),
    (dict(lora_r=2.5), 'lora_r must be an integer, got 2.5'),
    (dict(lora_alpha=0), 'lora_alpha must be in [1, 100000], got 0'),
    (dict(lora_dropout=1.0), 'lora_dropout must be in [0, 1), got 1.0'),
    (dict(lora_dropout=-0.1), 'lora_dropout must be in [0, 1), got -0.1'),
    (dict(lora_target_modules=[]), 'lora_target_modules must be a non-empty list of module names, got []'),
    (dict(lora_target_modules=' , '), 'lora_target_modules must be a non-empty list of module names, got []'),
    (dict(lora_target_modules=3), 'lora_target_modules must be a list of strings or a comma-separated string, got 3'),
    (dict(beta=-1.0), 'beta must be in [0, 10000], got -1.0'),
    (dict(beta=1e300), 'beta must be in [0, 10000], got 1e+300'),
    (dict(beta='abc'), "beta must be a finite number, got 'abc'"),
    (dict(beta=float('inf')), 'beta must be a finite number, got inf'),
    (dict(beta=True), 'beta must be a finite number, got True'),
    (dict(kl_coef=-0.1), 'kl_coef must be in [0, 1000], got -0.1'),
    (dict(reinforce_pp_kl_coef=-1), 'reinforce_pp_kl_coef must be in [0, 1000], got -1.0'),
    (dict(loss_agg='seq_mean'), "loss_agg must be one of 'token_mean', 'seq_mean_token_mean', got 'seq_mean'"),
    (dict(ref_forward='sometimes'), "ref_forward must be one of 'always', 'when_needed', got 'sometimes'"),
    (dict(learning_rate=0), 'learning_rate must be in (0, 1], got 0.0'),
    (dict(learning_rate=1e30), 'learning_rate must be in (0, 1], got 1e+30'),
    (dict(learning_rate=1e300), 'learning_rate must be in (0, 1], got 1e+300'),
    (dict(z_learning_rate=-1e-3), 'z_learning_rate must be in [0, 10], got -0.001'),
    (dict(weight_decay=-0.1), 'weight_decay must be in [0, 10], got -0.1'),
    (dict(warmup_steps=-1), 'warmup_steps must be >= 0, got -1'),
    (dict(warmup_unit='epoch'), "warmup_unit must be one of 'optimizer_step', 'rollout_step', got 'epoch'"),
    (dict(max_grad_norm=0), 'max_grad_norm must be in (0, 1e+06], got 0.0'),
    (dict(adam_beta1=1.0), 'adam_beta1 must be in [0, 1), got 1.0'),
    (dict(adam_beta2=-0.5), 'adam_beta2 must be in [0, 1), got -0.5'),
    (dict(max_nonfinite_steps=0), 'max_nonfinite_steps must be >= 1, got 0'),
    (dict(is_mode='clamp'), "is_mode must be one of 'none', 'cap', 'clip', 'geo_clip', got 'clamp'"),
    (dict(is_mode='geoclip'), '(did you mean "geo_clip"?)'),
    (dict(is_cap=0), 'is_cap must be in (0, 1e+06], got 0.0'),
    (dict(epsilon=1.5), 'epsilon must be in (0, 1), got 1.5'),
    (dict(epsilon=0), 'epsilon must be in (0, 1), got 0.0'),
    (dict(epsilon_high=0), 'epsilon_high must be in (0, 10], got 0.0'),
    (dict(tis_cap=0), 'tis_cap must be in (0, 1e+06], got 0.0'),
    (dict(num_generations=0), 'num_generations must be in [1, 4096], got 0'),
    (dict(prompts_per_step=0), 'prompts_per_step must be >= 1, got 0'),
    (dict(num_mini_batches=0), 'num_mini_batches must be >= 1, got 0'),
    (dict(num_mini_batches=3), 'num_mini_batches must divide prompts_per_step (16), got 3'),
    (dict(prompts_per_step=6, num_mini_batches=4), 'num_mini_batches must divide prompts_per_step (6), got 4'),
    (dict(max_steps=0), 'max_steps must be >= 1, got 0'),
    (dict(max_prompt_length=0), 'max_prompt_length must be >= 1, got 0'),
    (dict(max_completion_length=0), 'max_completion_length must be >= 1, got 0'),
    (dict(temperature=0), 'temperature must be in [0.001, 100], got 0.0'),
    (dict(temperature=1e-300), 'temperature must be in [0.001, 100], got 1e-300'),
    (dict(reward_incorrect=-1e308), 'reward_incorrect must be in [-1e+06, 1e+06], got -1e+308'),
    (dict(reward_timeout=0), 'reward_timeout must be in (0, 1e+06], got 0.0'),
    (dict(max_reward_error_batches=0), 'max_reward_error_batches must be >= 1, got 0'),
    (dict(top_p=0), 'top_p must be in (0, 1], got 0.0'),
    (dict(top_p=1.5), 'top_p must be in (0, 1], got 1.5'),
    (dict(rollout_engine='sglang'), "rollout_engine must be one of 'hf', 'vllm', got 'sglang'"),
    (dict(vllm_dtype='fp8'), "vllm_dtype must be one of 'auto', 'float32', 'bfloat16', 'float16', got 'fp8'"),
    (dict(vllm_gpu_memory_utilization=0), 'vllm_gpu_memory_utilization must be in (0, 1], got 0.0'),
    (dict(vllm_gpu_memory_utilization=1.2), 'vllm_gpu_memory_utilization must be in (0, 1], got 1.2'),
    (dict(vllm_enable_sleep_mode='maybe'), "vllm_enable_sleep_mode must be true or false, got 'maybe'"),
    (dict(vllm_gpu_memory_utilization=0.9), "vllm_gpu_memory_utilization=0.9 applies only to rollout_engine='vllm'"),
    (dict(tis_cap='automatic'), "tis_cap must be a number, none or 'auto', got 'automatic'"),
    (dict(z_num_layers=0), 'z_num_layers must be >= 1, got 0'),
    (dict(z_dropout=1), 'z_dropout must be in [0, 1), got 1.0'),
    (dict(z_detach='sometimes'), "z_detach must be true or false, got 'sometimes'"),
    (dict(z_exclude_last=2), 'z_exclude_last must be true or false, got 2'),
    (dict(z_init='first'), 'z_init must be one of \'default\', \'first_batch\', got \'first\' (did you mean "first_batch"?)'),
    (dict(task=''), "task must be one of 'digit_sum', 'arith', got ''"),
    (dict(task=3), 'task must be a string, got 3'),
    (dict(task_min_target=0), 'task_min_target must be >= 1, got 0'),
    (dict(task_min_target=10, task_max_target=8), 'task_max_target must be >= task_min_target (10), got 8'),
    (dict(task_max_target=30), 'task_max_target must be <= 9 * task_max_digits (27) for the digit_sum task, got 30'),
    (dict(task_max_digits=0), 'task_max_digits must be >= 1, got 0'),
    (dict(task_partial_credit='partly'), "task_partial_credit must be true or false, got 'partly'"),
    (dict(task_max_number=1), 'task_max_number must be in [2, 1000000], got 1'),
    (dict(task_num_ops=4), 'task_num_ops must be in [1, 3], got 4'),
    (dict(task_ops='+/'), "task_ops must be distinct operations from '+-*', e.g. '+-', got '+/'"),
    (dict(task_ops='++'), "task_ops must be distinct operations from '+-*'"),
    (dict(task_num_problems=0), 'task_num_problems must be >= 1, got 0'),
    (dict(task_num_heldout=-1), 'task_num_heldout must be >= 0, got -1'),
    (dict(eval_file='task', eval_steps=5), 'eval_file="task" evaluates the task\'s held-out split, which only the arith task has'),
    (dict(seed=-1), 'seed must be in [0, 4294967295], got -1'),
    (dict(output_dir=''), "output_dir must be a non-empty string, got ''"),
    (dict(logging_steps=0), 'logging_steps must be >= 1, got 0'),
    (dict(save_steps=-1), 'save_steps must be >= 0, got -1'),
    (dict(coverage_steps=-5), 'coverage_steps must be >= 0, got -5'),
    (dict(coverage_mode='thread'), "coverage_mode must be one of 'background', 'inline', got 'thread'"),
    (dict(device='gpu'), "device must be 'auto', 'cpu', 'mps', 'cuda' or 'cuda:N', got 'gpu'"),
]


@pytest.mark.parametrize('kw,msg', BAD, ids=[' '.join(f'{k}={v!r}' for k, v in kw.items()) for kw, _ in BAD])
def test_bad_value(kw, msg):
    with pytest.raises(ValueError) as e: FlowRLConfig(**kw)
    assert msg in str(e.value)


def test_every_field_with_a_range_is_exercised():
    tested = {k for kw, _ in BAD for k in kw}
    assert set(FIELD_CHECKS) <= tested, set(FIELD_CHECKS) - tested


def test_all_problems_reported_together():
    with pytest.raises(ValueError) as e: FlowRLConfig(beta=-1, epsilon=2, device='gpu')
    lines = str(e.value).splitlines()
    assert lines[0] == '3 invalid FlowRLConfig values:'
    assert [l.split()[0] for l in lines[1:]] == ['beta', 'epsilon', 'device']


def test_cross_check_skipped_when_its_field_is_bad():
    with pytest.raises(ValueError) as e: FlowRLConfig(num_mini_batches=0)
    assert str(e.value) == 'num_mini_batches must be >= 1, got 0'  # no second message about dividing


def test_validate_catches_later_mutation():
    cfg = FlowRLConfig(); cfg.beta = -2
    with pytest.raises(ValueError, match=r'beta must be in \[0, 10000\], got -2.0'): cfg.validate()


def test_target_range_only_checked_for_digit_sum():
    assert FlowRLConfig(task='arith', task_max_target=100).task_max_target == 100


# --- parsing strings (the CLI's --set key=value) ------------------------------------------------------------------
@pytest.mark.parametrize('name,s,want', [
    ('learning_rate', '1e-3', 1e-3), ('beta', '15', 15.0), ('beta', 5, 5.0), ('lora_r', '16', 16), ('max_steps', '1e3', 1000),
    ('prompts_per_step', 32.0, 32), ('z_detach', 'true', True), ('z_detach', 'False', False), ('z_detach', 'yes', True),
    ('gradient_checkpointing', '0', False), ('quantization', 'none', None), ('quantization', 'NULL', None),
    ('quantization', '4bit', '4bit'), ('tis_cap', 'None', None), ('tis_cap', '2', 2.0), ('output_dir', 'runs/a', 'runs/a'),
    ('lora_target_modules', 'q_proj,v_proj', ['q_proj', 'v_proj']), ('lora_target_modules', ' q_proj ,, k_proj ', ['q_proj', 'k_proj']),
    ('lora_target_modules', ('q_proj',), ['q_proj']), ('device', 'cuda:1', 'cuda:1'),
])
def test_coerce(name, s, want):
    got = FlowRLConfig.coerce(name, s)
    assert got == want and type(got) is type(want)


@pytest.mark.parametrize('name,s,msg', [
    ('lora_r', '2.5', "lora_r must be an integer, got '2.5'"),
    ('learning_rate', 'fast', "learning_rate must be a finite number, got 'fast'"),
    ('learning_rate', 'nan', "learning_rate must be a finite number, got 'nan'"),
    ('beta', 'none', "beta must be a finite number, got 'none'"),  # not optional: no None
    ('z_detach', 'maybe', "z_detach must be true or false, got 'maybe'"),
    ('epsilon', '1.5', 'epsilon must be in (0, 1), got 1.5'),
    ('betta', '1', 'unknown config field \'betta\' (did you mean "beta"?)'),
])
def test_coerce_errors(name, s, msg):
    with pytest.raises(ValueError) as e: FlowRLConfig.coerce(name, s)
    assert msg in str(e.value)


# --- live changes -------------------------------------------------------------------------------------------------
def test_live_fields_are_fields():
    assert set(LIVE_FIELDS) <= set(FIELD_NAMES)
    assert LIVE_FIELDS == ('beta', 'learning_rate', 'z_learning_rate', 'is_mode', 'is_cap',
                           'epsilon', 'epsilon_high', 'tis_cap', 'temperature', 'reward_form', 'length_norm')


@pytest.mark.parametrize('name,value,want', [
    ('beta', '5', 5.0), ('learning_rate', 1e-4, 1e-4), ('z_learning_rate', '0', 0.0), ('is_mode', 'clip', 'clip'),
    ('is_cap', 3, 3.0), ('epsilon', '0.1', 0.1), ('epsilon_high', 0.4, 0.4), ('tis_cap', 'none', None),
    ('tis_cap', '2', 2.0), ('temperature', '0.7', 0.7),
])
def test_validate_change_accepts(name, value, want):
    cfg = FlowRLConfig()
    before = cfg.to_dict()
    assert cfg.validate_change(name, value) == want
    assert cfg.to_dict() == before  # never mutates


@pytest.mark.parametrize('name', sorted(set(FIELD_NAMES) - set(LIVE_FIELDS)))
def test_validate_change_refuses_non_live(name):
    cfg = FlowRLConfig()
    with pytest.raises(ValueError, match=f'{name} cannot change during a run; live fields are beta, '):
        cfg.validate_change(name, getattr(cfg, name))


@pytest.mark.parametrize('name,value,msg', [
    ('beta', -1, 'beta must be in [0, 10000], got -1.0'), ('is_mode', 'clamp', "is_mode must be one of"),
    ('epsilon', 1.5, 'epsilon must be in (0, 1), got 1.5'), ('temperature', '0', 'temperature must be in [0.001, 100], got 0.0'),
    ('tis_cap', -1, 'tis_cap must be in (0, 1e+06], got -1.0'), ('learning_rate', 'x', "learning_rate must be a finite number, got 'x'"),
    ('bta', 1, 'unknown config field \'bta\' (did you mean "beta"?)'),
])
def test_validate_change_refuses_bad_values(name, value, msg):
    with pytest.raises(ValueError) as e: FlowRLConfig().validate_change(name, value)
    assert msg in str(e.value)


def test_validate_change_uses_the_field_table():
    "The live check and the full check share FIELD_CHECKS: patching one entry changes both."
    orig = FIELD_CHECKS['beta']
    def no_big_beta(name, v):
        if v > 100: raise ValueError(f'{name} too big, got {v}')
    FIELD_CHECKS['beta'] = no_big_beta
    try:
        with pytest.raises(ValueError, match='beta too big'): FlowRLConfig(beta=200)
        with pytest.raises(ValueError, match='beta too big'): FlowRLConfig().validate_change('beta', 200)
    finally: FIELD_CHECKS['beta'] = orig


# --- replace, dicts, YAML, JSON -------------------------------------------------------------------------------------
def test_replace():
    cfg = FlowRLConfig()
    c2 = cfg.replace(beta='5', lora_target_modules='q_proj')
    assert (c2.beta, c2.lora_target_modules, cfg.beta, cfg.lora_target_modules) == (5.0, ['q_proj'], 15.0, list(LORA_TARGETS))
    c3 = cfg.replace()
    c3.lora_target_modules.append('lm_head')  # copies never share the list
    assert cfg.lora_target_modules == list(LORA_TARGETS)
    with pytest.raises(ValueError, match='did you mean "num_generations"'): cfg.replace(num_generation=4)


@pytest.mark.parametrize('key,closest', [('betta', 'beta'), ('lerning_rate', 'learning_rate'), ('epsilon_hi', 'epsilon_high'),
                                         ('num_generation', 'num_generations'), ('zzz_qqq', None)])
def test_unknown_key_did_you_mean(key, closest):
    with pytest.raises(ValueError) as e: FlowRLConfig.from_dict({key: 1})
    msg = str(e.value)
    assert msg.startswith(f'unknown config key {key!r}')
    assert (f'(did you mean "{closest}"?)' in msg) if closest else ('did you mean' not in msg)


def test_from_dict_types():
    with pytest.raises(ValueError, match='needs a mapping'): FlowRLConfig.from_dict([('beta', 1)])
    assert FlowRLConfig.from_dict(None) == FlowRLConfig()


def test_yaml_round_trip_defaults(tmp_path):
    cfg = FlowRLConfig()
    assert FlowRLConfig.from_yaml(cfg.to_yaml()) == cfg
    text = cfg.to_yaml(tmp_path / 'sub' / 'config.yaml')
    assert (tmp_path / 'sub' / 'config.yaml').read_text() == text
    assert [p.name for p in (tmp_path / 'sub').iterdir()] == ['config.yaml']  # atomic: no temp file left
    assert FlowRLConfig.from_yaml(tmp_path / 'sub' / 'config.yaml') == cfg
    assert list(FlowRLConfig.from_yaml(text).to_dict()) == list(FIELD_NAMES)
    assert text.splitlines()[0] == 'algorithm: flowrl'  # field order kept


def test_yaml_missing_file_is_an_error(tmp_path):
    with pytest.raises(FileNotFoundError): FlowRLConfig.from_yaml(str(tmp_path / 'nope.yaml'))


def test_yaml_quirks():
    # PyYAML reads 1e-6 (no dot) as a string; YAML's own booleans and nulls work too
    cfg = FlowRLConfig.from_yaml('learning_rate: 1e-6\nz_detach: yes\nquantization: ~\ntis_cap: null\nlora_target_modules: q_proj, v_proj\n')
    assert (cfg.learning_rate, cfg.z_detach, cfg.quantization, cfg.tis_cap, cfg.lora_target_modules) == \
        (1e-6, True, None, None, ['q_proj', 'v_proj'])
    with pytest.raises(ValueError, match='unknown config key'): FlowRLConfig.from_yaml('betta: 5')


def test_json_round_trip(tmp_path):
    cfg = FlowRLConfig(quantization='8bit', tis_cap=3.0, output_dir='runs/x', z_exclude_last=True)
    (tmp_path / 'c.json').write_text(json.dumps(cfg.to_dict()))
    assert FlowRLConfig.from_json(tmp_path / 'c.json') == cfg


_name = st.text(alphabet='abcdefghijklmnopqrstuvwxyz_0123456789.', min_size=1, max_size=12)
_path = st.text(st.characters(blacklist_categories=('Cs', 'Cc')), min_size=1, max_size=20).filter(
    lambda s: s.strip() and s.strip().lower() not in ('none', 'null', '~'))

@settings(max_examples=100, deadline=None)
@given(beta=st.floats(0, 1e4, allow_nan=False), lr=st.floats(1e-12, 1), tis_cap=st.none() | st.floats(1e-6, 1e3),
       quant=st.sampled_from([None, '4bit', '8bit']), mods=st.lists(_name, min_size=1, max_size=5),
       out=st.none() | _path, flag=st.booleans(), seed=st.integers(0, 2**32 - 1), is_mode=st.sampled_from(IS_MODES))
def test_yaml_round_trip_property(beta, lr, tis_cap, quant, mods, out, flag, seed, is_mode):
    cfg = FlowRLConfig(beta=beta, learning_rate=lr, tis_cap=tis_cap, quantization=quant, lora_target_modules=mods,
                       output_dir=out, z_detach=flag, gradient_checkpointing=not flag, seed=seed, is_mode=is_mode)
    back = FlowRLConfig.from_yaml(cfg.to_yaml())
    assert back == cfg
    assert dataclasses.asdict(back) == dataclasses.asdict(cfg)


def test_choices_match_objective():
    "The objective module owns the IS rules and loss aggregations; the config must offer exactly those."
    objective = pytest.importorskip('flowrl_nb.objective')
    assert objective.IS_MODES is IS_MODES  # one declaration, shared
    assert objective.AGG_MODES is LOSS_AGGS


def test_defaults_build_the_task():
    "Every config that validates builds its digit-sum task (the task module re-checks the same ranges)."
    task = pytest.importorskip('flowrl_nb.task')
    for kw in ({}, dict(task_min_target=1, task_max_target=27), dict(task_max_digits=1, task_max_target=9)):
        cfg = FlowRLConfig(**kw)
        t = task.task_from_config(cfg)
        assert (t.min_target, t.max_target, t.max_digits) == (cfg.task_min_target, cfg.task_max_target, cfg.task_max_digits)
