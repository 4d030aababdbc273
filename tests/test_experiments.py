"compare, its files and the `compare` / `demo` commands, end to end with a few steps on a small task."
import json, re, subprocess, sys
from pathlib import Path
import pytest, torch
from flowrl_nb.config import FlowRLConfig
from flowrl_nb.experiments import compare, demo_config, report_html, summarize, DEMO_OVERRIDES
from flowrl_nb.runlog import load_run
from small_compare import EXE, SETS, SMALL  # tests/small_compare.py

torch.set_num_threads(1)


@pytest.fixture(scope='module')
def result(tmp_path_factory):
    out = tmp_path_factory.mktemp('cmp')
    return compare(FlowRLConfig(**SMALL), steps=3, out_dir=out), out


def test_compare_same_start_histories_and_summary(result):
    res, out = result
    assert list(res.histories) == ['flowrl', 'grpo', 'reinforce_pp', 'ppo']
    for name, h in res.histories.items():
        assert [m['step'] for m in h] == [0, 1, 2, 3]
        assert [('coverage/correct_mass' in m) for m in h] == [True, False, True, True]   # start, every 2nd, last
        assert abs(h[-1]['coverage/total_mass'] - 1) < 1e-5
        run = load_run(res.run_dirs[name])
        assert run.config.algorithm == name
        assert run.series('coverage/correct_mass')[0] == [0, 2, 3]     # the start and the forced last measurement are logged
    starts = [h[0] for h in res.histories.values()]
    assert len({s['coverage/correct_mass'] for s in starts}) == 1       # one initial model
    assert starts[0]['coverage/kl_pi_target_inf'] == pytest.approx(0, abs=1e-9)
    # the same prompts, in the same order: the first step's sampled prompts agree across algorithms
    firsts = [load_run(d).metrics[1]['reward/mean'] for d in res.run_dirs.values()]
    assert firsts[0] == firsts[1] == firsts[2]   # same model, seed and prompts: identical first rollout (before any update)
    s = res.summary
    for name in res.runs:
        r = s['runs'][name]
        for k in ('reward_mean', 'correct_mass', 'kl_pi_target_inf', 'kl_target_pi_inf', 'modes_covered', 'effective_modes'):
            assert isinstance(r[k], float), (name, k)
        assert r['steps'] == 3
    assert s['start']['correct_mass'] == starts[0]['coverage/correct_mass']
    assert '| start (reference) | 0 |' in res.table() and '| grpo | 3 |' in res.table()


def test_files_are_written_and_the_report_is_offline(result):
    res, out = result
    assert sorted(p.name for p in out.iterdir()) == ['report.html', 'runs', 'summary.json']
    s = json.loads((out / 'summary.json').read_text())
    assert set(s['runs']) == {'flowrl', 'grpo', 'reinforce_pp', 'ppo'} and s['config']['task_max_digits'] == 2
    page = (out / 'report.html').read_text()
    assert page.count('* plotly.js v') == 1                      # plotly.js inlined exactly once
    assert not re.search(r'<script[^>]+src=|<link[^>]+href=["\']?http', page)   # nothing fetched from the network
    assert page.count('class="plotly-graph-div"') == 3          # training curves, trade-off, final distributions
    assert 'correct mass V' in page and 'Final distributions over the correct answers' in page


def test_writes_are_atomic(result, tmp_path, monkeypatch):
    res, _ = result
    res.write(tmp_path)
    before = (tmp_path / 'report.html').read_bytes()
    import flowrl_nb.experiments as ex
    def boom(*a, **k): raise RuntimeError('killed while rendering')
    monkeypatch.setattr(ex, 'report_html', boom)
    with pytest.raises(RuntimeError, match='killed'): res.write(tmp_path)
    assert (tmp_path / 'report.html').read_bytes() == before      # the old report is intact ...
    assert sorted(p.name for p in tmp_path.iterdir()) == ['report.html', 'summary.json']   # ... and no temp file is left


def test_runs_sweep_any_field_and_errors(tmp_path):
    res = compare(FlowRLConfig(**SMALL), runs={'b1': {'beta': 1.0}, 'b5': {'beta': 5.0}}, steps=1)
    h1, h5 = res.histories['b1'][0], res.histories['b5'][0]
    assert h1['coverage/correct_mass'] == h5['coverage/correct_mass']       # the same start ...
    assert h1['coverage/kl_pi_target'] != h5['coverage/kl_pi_target']       # ... measured against each run's own β
    assert res.histories['b1'][-1]['control/beta'] == 1.0
    with pytest.raises(ValueError, match='did you mean "grpo"'): compare(FlowRLConfig(**SMALL), algorithms=('gpro',))
    with pytest.raises(ValueError, match='output_dir'): compare(FlowRLConfig(**SMALL), runs={'a': {'output_dir': 'x'}})
    with pytest.raises(ValueError, match='must be a non-empty dict'): compare(FlowRLConfig(**SMALL), runs={})


def test_charts_take_plain_histories():
    hist = {'a': [{'step': 0, 'coverage/correct_mass': 0.2, 'coverage/target_effective_modes': 3.0},
                  {'step': 1, 'reward/mean': 0.5, 'coverage/correct_mass': 0.3}]}
    page = report_html(summarize(hist), hist)
    assert page.count('* plotly.js v') == 1 and page.count('class="plotly-graph-div"') == 2


def test_cli_compare_and_demo(tmp_path):
    out = tmp_path / 'cmp'
    r = subprocess.run([EXE, 'compare', '--algos', 'flowrl', 'grpo', '--steps', '2', '--out', str(out), *SETS],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    table = r.stdout.split('run ', 1)[1]   # the verdict, then the aligned table: one row per run, with its steps
    assert re.search(r'^flowrl +2 ', table, re.M) and re.search(r'^grpo +2 ', table, re.M) and 'reinforce_pp' not in r.stdout
    assert 'Closest to the target:' in r.stdout and 'correct' in r.stdout and 'KL(π_C‖p*)' in table
    assert set(json.loads((out / 'summary.json').read_text())['runs']) == {'flowrl', 'grpo'}
    assert (out / 'report.html').exists() and (out / 'runs' / 'grpo' / 'metrics.jsonl').exists()
    out = tmp_path / 'demo'
    r = subprocess.run([EXE, 'demo', '--algos', 'reinforce_pp', '--steps', '1', '--out', str(out), *SETS],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    cfg = json.loads((out / 'summary.json').read_text())['config']
    assert cfg['coverage_steps'] == 2 and cfg['max_steps'] == 1   # --set and --steps win over the demo defaults
    r = subprocess.run([EXE, 'compare', '--out', str(tmp_path / 'x'), '--set', 'betta=1'], capture_output=True, text=True)
    assert r.returncode == 2 and 'did you mean "beta"' in r.stderr


def test_demo_defaults_are_a_valid_config():
    cfg = demo_config()
    assert all(getattr(cfg, k) == v for k, v in DEMO_OVERRIDES.items())
    assert cfg.algorithm == 'flowrl' and cfg.model_name_or_path == 'tiny'
