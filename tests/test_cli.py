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
    from flowrl_nb.cli import PRESET_NAMES, build_config, main
    from flowrl_nb.config import PRESETS, FlowRLConfig
    root = Path(__file__).resolve().parents[1]
    for name in PRESETS:
        path = root / 'examples' / (name.replace('-', '_') + '.yaml')
        assert path.is_file(), f'preset {name} has no {path}'
        assert FlowRLConfig.from_yaml(path) == FlowRLConfig.preset(name), f'{path.name} and PRESETS[{name!r}] differ'
        assert name in PRESET_NAMES
        assert build_config(preset=name, sets=['max_steps=2']) == FlowRLConfig.preset(name, max_steps=2)
    assert main(['train', '--preset', 'nope']) == 2  # refused with the known names, before anything loads
