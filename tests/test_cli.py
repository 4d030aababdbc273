"The `flowrl_nb` console script, run as a user would."
import json, subprocess, sys
from pathlib import Path
from flowrl_nb import __version__

EXE = str(Path(sys.executable).parent / 'flowrl_nb')


def run(*args, **kw):
    return subprocess.run([EXE, *args], capture_output=True, text=True, timeout=600, **kw)


def test_version():
    r = run('--version')
    assert r.returncode == 0 and r.stdout.strip() == f'flowrl_nb {__version__}'


def test_train_writes_run_and_summary(tmp_path):
    out = tmp_path / 'run'
    cfg = tmp_path / 'cfg.yaml'
    cfg.write_text('algorithm: grpo\nprompts_per_step: 4\nnum_generations: 4\n')
    r = run('train', '--config', str(cfg), '--set', 'max_steps=2', '--set', f'output_dir={out}', '--set', 'learning_rate=2e-3')
    assert r.returncode == 0, r.stderr
    lines = r.stdout.strip().splitlines()
    assert lines[0] == f'run directory: {out}'
    assert lines[-1].startswith('done: grpo, 2 steps in ')
    recs = [r for r in map(json.loads, (out / 'metrics.jsonl').read_text().splitlines()) if r['type'] == 'step']
    assert [x['step'] for x in recs] == [1, 2]
    assert 'learning_rate: 0.002' in (out / 'config.yaml').read_text()
    # resume continues the same run
    r = run('train', '--resume', str(out), '--steps', '1')
    assert r.returncode == 0, r.stderr
    assert [r['step'] for r in map(json.loads, (out / 'metrics.jsonl').read_text().splitlines()) if r['type'] == 'step'] == [1, 2, 3]


def test_unknown_key_is_refused_with_a_suggestion():
    r = run('train', '--set', 'betta=5')
    assert r.returncode == 2
    assert 'did you mean "beta"' in r.stderr and 'Traceback' not in r.stderr


def test_bad_value_names_field_and_range():
    r = run('train', '--set', 'beta=-1')
    assert r.returncode == 2 and 'beta' in r.stderr and '-1' in r.stderr


def test_cli_import_is_light():
    code = 'import sys, flowrl_nb.cli; print("torch" in sys.modules)'
    r = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True)
    assert r.stdout.strip() == 'False'


def test_presets_and_their_example_files():
    "Every preset has its example YAML with the same fields (examples/<name>.yaml), and the CLI's help names it."
    from flowrl_nb.cli import build_config, main, make_parser
    from flowrl_nb.config import PRESETS, FlowRLConfig
    root = Path(__file__).resolve().parents[1]
    for name in PRESETS:
        path = root / 'examples' / (name.replace('-', '_') + '.yaml')
        assert path.is_file(), f'preset {name} has no {path}'
        assert FlowRLConfig.from_yaml(path) == FlowRLConfig.preset(name), f'{path.name} and PRESETS[{name!r}] differ'
        assert name in make_parser().format_help() or name in run('train', '--help').stdout
        assert build_config(preset=name, sets=['max_steps=2']) == FlowRLConfig.preset(name, max_steps=2)
    assert main(['train', '--preset', 'nope']) == 2  # refused with the known names, before anything loads


def test_second_run_in_a_folder_is_a_note_not_a_warning(tmp_path):
    "A new run in a folder that holds one: a one-line note with the CLI command that continues the old run, no Python warning, no loading bar."
    out = tmp_path / 'run'
    args = ('train', '--set', 'max_steps=1', '--set', 'prompts_per_step=2', '--set', 'num_generations=2',
            '--set', 'num_mini_batches=1', '--set', 'coverage_steps=0', '--set', f'output_dir={out}')
    assert run(*args).returncode == 0
    r = run(*args)
    assert r.returncode == 0, r.stderr
    moved = next(tmp_path.glob('run.previous-*'))
    assert f'note: {out} already held a run; it was moved to {moved}' in r.stderr
    assert f'flowrl_nb train --resume {moved}' in r.stderr
    assert 'Warning' not in r.stderr and 'Trainer.resume(' not in r.stderr, r.stderr
    assert 'Loading weights' not in r.stderr, r.stderr   # the built-in tiny model loads without a bar


def test_config_command_prints_every_field_and_the_example_file_is_its_output(tmp_path):
    from flowrl_nb.config import FIELD_NAMES, FlowRLConfig
    r = run('config')
    assert r.returncode == 0, r.stderr
    assert FlowRLConfig.from_yaml(r.stdout) == FlowRLConfig()
    assert all(f'\n{name}: ' in r.stdout for name in FIELD_NAMES)
    example = Path(__file__).resolve().parents[1] / 'examples' / 'tiny_flowrl.yaml'
    assert example.read_text() == r.stdout, 'examples/tiny_flowrl.yaml is out of date: flowrl_nb config > examples/tiny_flowrl.yaml'
    r = run('config', '--preset', 'smollm2-arith', '--set', 'max_steps=3')
    assert FlowRLConfig.from_yaml(r.stdout) == FlowRLConfig.preset('smollm2-arith', max_steps=3)
    # the file trains as it is
    (tmp_path / 'c.yaml').write_text(r.stdout)
    assert run('config', '--config', str(tmp_path / 'c.yaml')).stdout == r.stdout


def test_help_shows_examples_and_fields():
    for cmd in ('train', 'sweep', 'compare', 'demo'):
        text = run(cmd, '--help').stdout
        assert 'examples:' in text and 'config fields' in text, cmd
        assert '    learning_rate = 0.001  policy (LoRA) AdamW lr' in text, cmd
