"""Fail loudly, stop cleanly, never hang (issue 13): each fault a hostile or unlucky user can cause, injected for real —
a reward function that hangs or always fails, a live change that breaks a step, SIGTERM and SIGINT, corrupt
checkpoints, torn logs, and the bad inputs that used to give tracebacks or were accepted."""
import json, math, os, shutil, signal, subprocess, sys, threading, time, warnings
from pathlib import Path

import pytest, torch

from flowrl_nb.config import FlowRLConfig
from flowrl_nb.rewards import RewardError
from flowrl_nb.runlog import load_run
from flowrl_nb.tiny import tiny_model_path
from flowrl_nb.trainer import Trainer

torch.set_num_threads(1)
SMALL = dict(prompts_per_step=4, num_generations=4, num_mini_batches=2, max_steps=6, save_steps=0, coverage_steps=0)
EXE = str(Path(sys.executable).parent / 'flowrl_nb')
ENV = {**os.environ, 'HF_HUB_OFFLINE': '1', 'TOKENIZERS_PARALLELISM': 'false', 'OMP_NUM_THREADS': '1'}


def cfg(tmp_path, name='run', **kw):
    return FlowRLConfig(**{**SMALL, 'output_dir': str(tmp_path / name), **kw})


def cli(*args, timeout=600):
    return subprocess.run([EXE, *map(str, args)], capture_output=True, text=True, timeout=timeout, env=ENV)


# ------------------------------------------------------------------ reward functions that hang or always fail

def test_a_hanging_reward_function_costs_its_batch_not_the_run(tmp_path):
    gate, calls = threading.Event(), []
    def hangs(completions, **kw):  # answers the first batch, then never again (until the test opens the gate)
        calls.append(1)
        if len(calls) > 1: gate.wait(300)
        return [0.0] * len(completions)
    def good(completions, **kw): return [float(len(c) == 2) for c in completions]
    tr = Trainer(cfg(tmp_path, reward_timeout=1.0), reward_funcs=[good, hangs])
    with pytest.warns(RuntimeWarning, match="took longer than their limit of 1 s.*'hangs' was still running"):
        hist = tr.train(3)
    assert [m['reward/errors'] for m in hist] == [0, 16, 16] and tr.status == 'finished'
    gate.set()


def test_stop_says_plainly_when_the_run_cannot_stop_yet(tmp_path):
    gate, calls = threading.Event(), []
    def hangs(completions, **kw):
        calls.append(1)
        if len(calls) > 1: gate.wait(300)
        return [1.0] * len(completions)
    tr = Trainer(cfg(tmp_path, reward_timeout=20.0), reward_funcs=[hangs])
    tr.start(5)
    while len(calls) < 2: time.sleep(0.05)  # step 2 is now inside the hanging reward function
    with pytest.warns(RuntimeWarning, match=r"has not stopped yet: step 2 is still running \(in reward function 'hangs' for"):
        assert tr.stop(timeout=0.5) is False
    assert tr.status == 'stopping' and tr.running
    gate.set()
    tr.wait(60)
    assert not tr.running and tr.status == 'stopped' and tr.last_checkpoint is not None


def test_a_reward_that_fails_on_every_sample_stops_the_run(tmp_path):
    calls = []
    def broken(completions, **kw):  # fine once, then its verifier is gone
        calls.append(1)
        if len(calls) > 1: raise ConnectionError('verifier unreachable')
        return [1.0] * len(completions)
    tr = Trainer(cfg(tmp_path, max_reward_error_batches=2), reward_funcs=[broken])
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        with pytest.raises(RewardError, match=r'every sample of the last 2 batch\(es\) failed.*broken: ConnectionError: verifier unreachable'):
            tr.train(6)
    assert tr.step_count == 2 and tr.status == 'failed'  # steps 2 and 3 failed; step 3 never finished


def test_cli_exits_non_zero_when_the_default_reward_cannot_score_a_math_file(tmp_path):
    "The issue's case: train_file= a math file with the default reward=task (it needs a 'target' column)."
    r = cli('train', '--set', 'train_file=gsm8k', '--set', 'max_prompt_length=512', '--set', 'max_steps=2',
            '--set', f'output_dir={tmp_path / "run"}')
    assert r.returncode == 2, (r.returncode, r.stderr[-2000:])
    assert "reward function 'digit_sum' cannot score the first batch" in r.stderr and 'Traceback' not in r.stderr


def test_an_extreme_reward_value_is_an_error_not_an_overflow(tmp_path):
    calls = []
    def huge(completions, **kw):
        calls.append(1)
        return [1e308 if len(calls) > 1 and i == 0 else 1.0 for i in range(len(completions))]
    tr = Trainer(cfg(tmp_path), reward_funcs=[huge])
    with pytest.warns(RuntimeWarning, match=r'not finite numbers in \[-1e\+08, 1e\+08\] \(first 1e\+308\)'):
        hist = tr.train(2)
    assert hist[1]['reward/errors'] == 1 and hist[1]['reward/unscorable'] == 1 and math.isfinite(hist[1]['actor/final_loss'])


# ------------------------------------------------------------------ a live change that breaks a step is undone

def test_a_live_change_that_gives_a_non_finite_step_rolls_back(tmp_path):
    tr = Trainer(cfg(tmp_path, max_nonfinite_steps=1))
    p = next(p for p in tr.model.parameters() if p.requires_grad)
    # fault injection: while β is 77 every gradient is NaN (as a β or learning rate pushed too far would make it)
    p.register_hook(lambda g: g * math.nan if tr.controls.beta == 77.0 else g)
    tr.train(1)
    before = {n: q.detach().clone() for n, q in tr.model.named_parameters() if q.requires_grad}
    tr.controls.beta = 77.0
    with pytest.warns(RuntimeWarning, match=r'the live change beta=77.0 gave a non-finite loss or gradient norm; it was undone'):
        m = tr.train_step()
    assert tr.controls.beta == 15.0 and m['optim/rolled_back_steps'] == 1  # max_nonfinite_steps=1 did not stop the run
    events = load_run(tr.run_dir).events
    assert [(e['kind'], e['name'], e['old'], e['new']) for e in events] == [('control', 'beta', 15.0, 77.0),
                                                                            ('rollback', 'beta', 77.0, 15.0)]
    m2 = tr.train_step()  # the run goes on, at the old β
    assert m2['optim/skipped_steps'] == 0 and m2['control/beta'] == 15.0
    assert any(not torch.equal(before[n], q) for n, q in tr.model.named_parameters() if q.requires_grad)


# ------------------------------------------------------------------ signals

def _start(tmp_path, extra=()):
    out = tmp_path / 'run'
    proc = subprocess.Popen([EXE, 'train', '--set', 'max_steps=500', '--set', 'save_steps=0', '--set', 'coverage_steps=0',
                             '--set', f'output_dir={out}', *extra], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=ENV)
    deadline = time.time() + 300
    while time.time() < deadline:
        if (out / 'metrics.jsonl').exists() and len((out / 'metrics.jsonl').read_text().splitlines()) >= 2: break
        if proc.poll() is not None: break
        time.sleep(0.2)
    return proc, out


@pytest.mark.parametrize('sig, code', [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_signals_save_a_checkpoint_and_exit_with_the_shell_code(tmp_path, sig, code):
    proc, out = _start(tmp_path)
    assert proc.poll() is None, proc.communicate()
    proc.send_signal(sig)
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == code, (proc.returncode, stderr[-2000:])
    name = signal.Signals(sig).name
    assert f'interrupted by {name} at step' in stderr and f'--resume {out}' in stderr and 'done:' not in stdout
    steps = [r['step'] for r in map(json.loads, (out / 'metrics.jsonl').read_text().splitlines()) if r['type'] == 'step']
    ckpts = sorted((out / 'checkpoints').glob('step-*'))
    assert ckpts and ckpts[-1].name == f'step-{steps[-1]:06d}'  # the last finished step is checkpointed
    r = cli('train', '--resume', out, '--steps', '1')
    assert r.returncode == 0 and f'from step {steps[-1]}' in r.stdout, r.stderr[-2000:]


# ------------------------------------------------------------------ resume: corrupt checkpoints, torn logs, changed algorithm

@pytest.fixture()
def two_checkpoints(tmp_path):
    tr = Trainer(cfg(tmp_path, save_steps=2))
    tr.train(4)
    return tmp_path / 'run'


@pytest.mark.parametrize('damage', ['truncated_adapter', 'garbage_state', 'empty_folder'])
def test_resume_falls_back_to_the_newest_intact_checkpoint(two_checkpoints, damage):
    run = two_checkpoints
    newest = run / 'checkpoints' / 'step-000004'
    if damage == 'truncated_adapter':
        f = newest / 'adapter_model.safetensors'; f.write_bytes(f.read_bytes()[:100])
    elif damage == 'garbage_state':
        (newest / 'trainer_state.pt').write_bytes(b'not a checkpoint at all')
    else:
        newest = run / 'checkpoints' / 'step-000006'; newest.mkdir()
    (run / 'checkpoints' / '.step-000008.abcd1234.tmp').mkdir()  # a write cut short by a crash
    with pytest.warns(RuntimeWarning, match=rf'resuming .* from step-00000[24]; newer checkpoint\(s\) could not be restored and were skipped: {newest.name}'):
        tr = Trainer.resume(run)
    assert tr.step_count == (4 if damage == 'empty_folder' else 2)
    assert not list((run / 'checkpoints').glob('.step-*'))
    tr.train(1)


def test_resume_reports_a_torn_last_line(two_checkpoints):
    log = two_checkpoints / 'metrics.jsonl'
    log.write_text(log.read_text() + '{"type":"step","step":5,"reward/me')
    with pytest.warns(RuntimeWarning, match=r'metrics.jsonl ended in a torn line .*"type":"step","step":5'):
        tr = Trainer.resume(two_checkpoints)
    assert [m['step'] for m in load_run(two_checkpoints).metrics] == [1, 2, 3, 4] and tr.step_count == 4


def test_resume_with_another_algorithm_says_so_in_words(two_checkpoints):
    with pytest.raises(ValueError, match=r"cannot resume .* with algorithm: 'flowrl' -> 'grpo': its checkpoints hold the "
                                         r"adapter, heads and optimizer state of a flowrl run"):
        Trainer.resume(two_checkpoints, algorithm='grpo')


# ------------------------------------------------------------------ bad inputs: one clear line, exit 2, nothing left behind

def _refused(tmp_path, *sets, match, config=None):
    out = tmp_path / 'run'
    args = ['train', *(['--config', config] if config else []), *sum((['--set', s] for s in sets), []), '--set', f'output_dir={out}']
    r = cli(*args)
    assert r.returncode == 2, (r.returncode, r.stdout[-500:], r.stderr[-2000:])
    assert 'Traceback' not in r.stderr and match in r.stderr, r.stderr[-2000:]
    assert not out.exists(), 'a refused run left a folder behind'
    return r


def test_model_folder_with_garbage_weights(tmp_path):
    bad = tmp_path / 'bad-model'; shutil.copytree(tiny_model_path(), bad)
    (bad / 'model.safetensors').write_bytes(b'\0' * 1000)
    _refused(tmp_path, f'model_name_or_path={bad}', match='could not load the model weights in')


def test_model_that_is_not_a_causal_lm(tmp_path):
    from transformers import BertConfig, BertForMaskedLM
    d = tmp_path / 'bert'
    BertForMaskedLM(BertConfig(vocab_size=32, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                               intermediate_size=32)).save_pretrained(d)
    shutil.copy(tiny_model_path() / 'tokenizer.json', d); shutil.copy(tiny_model_path() / 'tokenizer_config.json', d)
    _refused(tmp_path, f'model_name_or_path={d}', match='holds a BertForMaskedLM (bert), which is not a causal language model')


def test_output_dir_under_a_file(tmp_path):
    f = tmp_path / 'a-file'; f.write_text('x')
    r = cli('train', '--set', f'output_dir={f / "run"}')
    assert r.returncode == 2 and f"{str(f)!r} is a file, not a folder" in r.stderr, r.stderr[-2000:]


def test_config_file_with_a_syntax_error(tmp_path):
    y = tmp_path / 'cfg.yaml'; y.write_text('beta: 5\nlearning_rate: [1e-3\nseed: 1\n')
    _refused(tmp_path, match=f'{y}: line 3, column 5: not valid YAML', config=y)
    j = tmp_path / 'cfg.json'; j.write_text('{"beta": 5,\n "seed": }\n')
    _refused(tmp_path, match=f'{j}: line 2, column 10: not valid JSON', config=j)


@pytest.mark.parametrize('steps', ['0', '-5'])
def test_steps_must_be_positive(tmp_path, steps):
    r = cli('train', '--steps', steps, '--set', f'output_dir={tmp_path / "run"}')
    assert r.returncode == 2 and f"must be a whole number >= 1, got '{steps}'" in r.stderr and not (tmp_path / 'run').exists()


def test_completion_beyond_the_model_positions(tmp_path):
    _refused(tmp_path, 'max_completion_length=100', match="is 105 tokens, more than the model's 64 positions")


def test_prompts_longer_than_max_prompt_length(tmp_path):
    _refused(tmp_path, 'max_prompt_length=3', match="prompt is 5 tokens, more than max_prompt_length=3 (14 of 14 prompts are)")


def test_a_step_that_cannot_fit_in_memory(tmp_path):
    _refused(tmp_path, 'prompts_per_step=10000', 'num_generations=4096', 'num_mini_batches=1',
             match='one optimizer step needs about')


def test_device_without_a_gpu(tmp_path):
    if torch.cuda.is_available(): pytest.skip('this machine has a GPU')
    _refused(tmp_path, 'device=cuda', match="device='cuda' but this machine has no CUDA GPU")
