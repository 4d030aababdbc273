"`sweep`, `sweep.json` / `sweep.html`, the `flowrl_nb sweep` command, and `compare` in worker processes."
import json, subprocess
from pathlib import Path
import pytest, torch
from flowrl_nb.config import FlowRLConfig
from flowrl_nb.dashboard import replay
from flowrl_nb.experiments import compare
from flowrl_nb.sweep import load_sweep, parse_values, sweep, sweep_table
from flowrl_nb.charts import sweep_figure
from small_compare import EXE, SETS, SMALL  # tests/small_compare.py

torch.set_num_threads(1)
NOT_TIMING = lambda h: [{k: v for k, v in m.items() if not k.startswith(('time', 'perf/'))} for m in h]  # 'time', 'time/…'


@pytest.fixture(scope='module')
def cli_sweep(tmp_path_factory):
    "The command line sweep, two processes, two β values and one reference."
    out = tmp_path_factory.mktemp('sweep')
    p = subprocess.run([EXE, 'sweep', '--values', '1,15', '--refs', 'grpo', '--steps', '3', '--workers', '2', '--out', str(out), *SETS],
                       capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    return p, out


def test_cli_writes_sweep_files(cli_sweep):
    p, out = cli_sweep
    assert p.stdout.startswith('sweeping beta over 1,15 for flowrl (+ grpo): 3 runs of 3 steps, 2 at a time')
    assert '| flowrl beta=15 | 15 | 3 |' in p.stdout and f'{out / "sweep.html"}' in p.stdout
    assert sorted(f.name for f in out.iterdir()) == ['report.html', 'runs', 'summary.json', 'sweep.html', 'sweep.json']
    assert not list(out.rglob('*.tmp*'))      # atomic writes leave no temporary files
    s = json.loads((out / 'sweep.json').read_text())
    assert (s['param'], s['values'], s['algorithms'], s['references']) == ('beta', [1.0, 15.0], ['flowrl'], ['grpo'])
    assert [(q['name'], q['value'], q['reference'], q['run_dir']) for q in s['points']] == [
        ('flowrl beta=1', 1.0, False, 'runs/flowrl_beta=1'), ('flowrl beta=15', 15.0, False, 'runs/flowrl_beta=15'),
        ('grpo', None, True, 'runs/grpo')]
    for q in s['points']:
        assert [m['step'] for m in q['trajectory']] == [0, 2, 3]
        assert q['final']['correct_mass'] == q['trajectory'][-1]['coverage/correct_mass']
        run_cfg = (out / q['run_dir'] / 'config.yaml').read_text()
        assert f'algorithm: {q["algorithm"]}' in run_cfg
        if not q['reference']: assert f'beta: {q["value"]}' in run_cfg
    assert len({json.dumps(q['trajectory'][0]) for q in s['points']}) == 1   # one starting point
    page = (out / 'sweep.html').read_text()
    assert page.count('* plotly.js v') == 1 and '<script src=' not in page   # opens offline
    assert 'flowrl beta=15' in page and 'href="report.html"' in page


def test_moved_sweep_replays(cli_sweep, tmp_path):
    _, out = cli_sweep
    moved = tmp_path / 'moved'
    import shutil; shutil.copytree(out, moved)
    s = load_sweep(moved)
    assert all(Path(q['run_dir']).is_relative_to(moved) for q in s['points'])
    rc = replay(moved)
    assert list(rc.figures) == ['sweep', 'coverage', 'internals']
    fig = rc['sweep']
    curve = [t for t in fig.data if t.name == 'flowrl: beta sweep']
    assert len(curve) == 2 and list(curve[0].text) == ['beta=1', 'beta=15']
    finals = {q['name']: q['trajectory'][-1] for q in s['points']}
    assert list(curve[0].x) == [finals['flowrl beta=1']['coverage/correct_mass'], finals['flowrl beta=15']['coverage/correct_mass']]
    assert list(curve[1].y) == [finals['flowrl beta=1']['coverage/kl_pi_target_inf'], finals['flowrl beta=15']['coverage/kl_pi_target_inf']]
    assert [t.name for t in fig.data if t.marker.symbol == 'diamond'] == ['grpo', 'grpo']   # the reference, in both panels
    assert sweep_table(s).splitlines()[5].startswith('| grpo | — | 3 |')


def test_workers_do_not_change_results(cli_sweep):
    "A run trained in a worker process gives the same numbers as in this process (one torch thread each)."
    _, out = cli_sweep
    torch.set_num_threads(1)   # as in each worker, whatever an earlier test left behind
    seq = sweep(FlowRLConfig(**SMALL), 'beta', '1,15', references=('grpo',), steps=3, workers=1)
    par = load_sweep(out)
    for q, r in zip(seq.summary['points'], par['points']):
        assert q['trajectory'] == r['trajectory'], q['name']
    for name, d in seq.comparison.run_dirs.items():
        from flowrl_nb.runlog import load_run
        assert NOT_TIMING(load_run(d).metrics) == NOT_TIMING(load_run(out / 'runs' / d.name).metrics)


def test_bad_input_is_refused_before_training(tmp_path):
    for args, msg in ((['--param', 'betta'], 'did you mean "beta"'), (['--values', '1,-1'], 'beta'),
                      (['--param', 'algorithm', '--values', 'grpo'], '--algos'), (['--values', '1,1'], "repeat ['1']"),
                      (['--workers', '0'], 'workers=0 is invalid')):
        p = subprocess.run([EXE, 'sweep', *args, '--steps', '1', '--out', str(tmp_path / 'x'), *SETS],
                           capture_output=True, text=True, timeout=300)
        assert p.returncode == 2 and msg in p.stderr, (args, p.stderr[-2000:])
        assert 'Traceback' not in p.stderr
    assert not (tmp_path / 'x' / 'runs').exists()
    with pytest.raises(ValueError, match='give at least one value'): parse_values('beta', '')
    with pytest.raises(FileNotFoundError, match='no sweep.json'): load_sweep(tmp_path)


def test_categorical_sweep_without_references():
    sw = sweep(FlowRLConfig(**SMALL), 'length_norm', ['mean', 'sum'], references=(), steps=2, workers=1)
    s = sw.summary
    assert [q['name'] for q in s['points']] == ['flowrl length_norm=mean', 'flowrl length_norm=sum']
    assert s['references'] == [] and not any(t.marker.symbol == 'diamond' for t in sweep_figure(s).data)
    h = sw.comparison.histories
    assert h['flowrl length_norm=mean'][1]['reward/mean'] == h['flowrl length_norm=sum'][1]['reward/mean']  # same first rollout
    assert h['flowrl length_norm=mean'][1]['actor/final_loss'] != h['flowrl length_norm=sum'][1]['actor/final_loss']     # different objective


def test_compare_in_workers_surfaces_a_failing_run(tmp_path):
    "A run that fails in its worker process raises in the caller, naming the run."
    cfg = FlowRLConfig(**SMALL)
    with pytest.raises(RuntimeError, match="run 'bad' failed in its worker process"):
        compare(cfg, runs={'ok': {}, 'bad': {'model_name_or_path': str(tmp_path / 'no-such-model')}}, steps=1, workers=2)
