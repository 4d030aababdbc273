"Dashboard tests: the log tail, the chart builders, and a real kernel steering a run through the widgets (nbclient)."
import json, textwrap, threading
from pathlib import Path
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from flowrl_nb.config import FlowRLConfig
from flowrl_nb.runlog import RunLog, RunTail, load_run
from flowrl_nb.dashboard import RunsView, replay
from flowrl_nb.charts import time_figure, target_weights, advantage_shares, TIME_CHARTS, chart_panels

# Small steps on the built-in task (3-digit answers, 54,241 completions per prompt): exact coverage every 2 steps,
# measured in the background (the config's default) while the run goes on.
SMALL = dict(prompts_per_step=4, num_generations=4, num_mini_batches=2, save_steps=0, coverage_steps=2)


def fake_run(d, steps=3, events=(), algorithm='flowrl', expected=()):
    "A run directory written by hand: config, a meta record of the metrics it will log, `steps` step records, and events."
    d = Path(d); log = RunLog(d)
    FlowRLConfig(algorithm=algorithm, output_dir=str(d)).to_yaml(d / 'config.yaml')
    if expected: log.log_meta(expected=list(expected))
    for s in range(1, steps + 1):
        for e in events:
            if e[0] == s: log.log_event(*e)
        log.log_step(s, {'reward/mean': 0.1 * s, 'actor/final_loss': 1.0 / s, 'actor/log_z': 0.5, 'coverage/correct_mass': 0.2 + 0.01 * s})
    return d


# --- reading a run while it is written ---------------------------------------------------------------------------

def test_tail_reads_only_complete_lines_and_restarts_after_a_rewrite(tmp_path):
    d = fake_run(tmp_path / 'r', steps=2)
    tail = RunTail(d)
    assert tail.poll() and [m['step'] for m in tail.run.metrics] == [1, 2]
    with open(d / 'metrics.jsonl', 'a') as f: f.write('{"type":"step","step":3,"reward/me')
    assert not tail.poll()                                       # a torn line waits
    with open(d / 'metrics.jsonl', 'a') as f: f.write('an":0.3}\n')
    assert tail.poll() and tail.run.metrics[-1] == {'type': 'step', 'step': 3, 'reward/mean': 0.3}
    RunLog(d).truncate_after(1)                                  # a resume rewrites the log
    tail.poll()
    assert [m['step'] for m in tail.run.metrics] == [1]
    assert tail.run.config.algorithm == 'flowrl' and tail.error is None


def test_tail_reads_the_config_before_the_first_step(tmp_path):
    d = tmp_path / 'r'; d.mkdir()
    FlowRLConfig(algorithm='grpo').to_yaml(d / 'config.yaml')
    tail = RunTail(d)
    assert not tail.poll() and tail.run.config.algorithm == 'grpo'


def test_tail_reports_a_corrupt_line_and_goes_on(tmp_path):
    d = fake_run(tmp_path / 'r', steps=1)
    with open(d / 'metrics.jsonl', 'a') as f: f.write('not json\n{"type":"step","step":2}\n')
    tail = RunTail(d); tail.poll()
    assert [m['step'] for m in tail.run.metrics] == [1, 2] and 'not valid JSON' in tail.error


# --- charts ----------------------------------------------------------------------------------------------------------

def test_replay_overlays_runs_and_marks_events(tmp_path):
    a = fake_run(tmp_path / 'flowrl', events=[(2, 'beta', 15.0, 5.0), (2, 'is_mode', 'cap', 'clip')])
    b = fake_run(tmp_path / 'grpo', algorithm='grpo')
    rc = replay({'FlowRL': a, 'GRPO': b})
    internals = rc['internals']
    assert [t.name for t in internals.data if t.showlegend] == ['FlowRL', 'GRPO']
    loss = [t for t in internals.data if t.hovertemplate.startswith('GRPO<br>loss')][0]
    assert list(loss.x) == [1, 2, 3]
    labelled = [s for s in internals.layout.shapes if s.label.text]
    assert {s.label.text for s in labelled} == {'β 15→5, IS cap→clip'} and labelled[0].x0 == 1.5
    # log Z is FlowRL's: its panel exists (the FlowRL run logs it) and holds one line per run, GRPO's empty
    assert 'mean log Z' in internals.layout.meta['panels']
    html = rc.to_html(include_plotlyjs=False)
    assert html.count('class="plotly-graph-div"') == 2


def test_panels_follow_what_runs_log_or_will_log(tmp_path):
    from flowrl_nb.coverage import COVERAGE_METRICS
    grpo = load_run(fake_run(tmp_path / 'g', steps=0, algorithm='grpo', expected=[f'coverage/{k}' for k in COVERAGE_METRICS]))
    titles = [p.title for p in chart_panels('internals', [grpo])]
    assert 'mean log Z' not in titles and 'loss' in titles
    cov = [p.title for p in chart_panels('coverage', [grpo])]    # it said it will log coverage: every panel, before any value
    assert len(cov) == len(TIME_CHARTS['coverage'][1])
    quiet = load_run(fake_run(tmp_path / 'q', steps=0, algorithm='grpo', expected=['actor/final_loss']))
    assert [p.title for p in chart_panels('coverage', [quiet])] == ['reward mean']


def test_a_trainer_says_what_it_will_log(tmp_path):
    from flowrl_nb.trainer import Trainer
    g = load_run(Trainer(FlowRLConfig(**SMALL, algorithm='grpo', output_dir=str(tmp_path / 'g'))).run_dir)
    f = load_run(Trainer(FlowRLConfig(**{**SMALL, 'coverage_steps': 0}, output_dir=str(tmp_path / 'f'))).run_dir)
    assert 'coverage/correct_mass' in g.expected and 'actor/log_z' not in g.expected and 'actor/kl_penalty' in g.expected
    assert 'actor/log_z' in f.expected and not any(k.startswith('coverage/') for k in f.expected)


def test_a_ppo_run_in_the_dashboard_and_replay(tmp_path):
    "A PPO run says it will log its critic, gets the critic's panels, and the dashboard builds with PPO's controls."
    from flowrl_nb.dashboard import Dashboard, replay
    from flowrl_nb.trainer import Trainer
    tr = Trainer(FlowRLConfig(**{**SMALL, 'coverage_steps': 0}, algorithm='ppo', output_dir=str(tmp_path / 'ppo')))
    run = load_run(tr.run_dir)
    assert {'critic/vf_loss', 'critic/vf_explained_var', 'optim/critic_grad_norm'} <= run.expected
    titles = [p.title for p in chart_panels('internals', [run])]
    assert {'critic: value loss', 'critic: explained variance'} <= set(titles) and 'mean log Z' not in titles
    dash = Dashboard(tr)
    shown = {k for k, row in dash._rows.items() if row.layout.display != 'none'}
    assert {'learning_rate', 'epsilon', 'epsilon_high', 'temperature'} <= shown and not {'beta', 'z_learning_rate'} & shown, shown
    tr.train(2, progress=False)
    rc = replay(tr.run_dir)
    ev = [t for t in rc['internals'].data if 'explained variance' in (t.hovertemplate or '')]
    assert ev and len(ev[0].x) == 2


def test_time_figure_thins_long_runs_but_keeps_the_last_point(tmp_path):
    d = tmp_path / 'long'; log = RunLog(d)
    for s in range(1, 2501): log.log_step(s, {'reward/mean': s})
    fig = time_figure([load_run(d)], 'coverage', max_points=500)
    tr = fig.data[-1]
    assert len(tr.x) <= 501 and tr.x[-1] == 2500 and tr.y[-1] == 2500


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 5), st.integers(1, 6), st.floats(0, 50), st.data())
def test_target_weights_are_a_softmax_within_each_group(groups, n, beta, data):
    adv = np.array(data.draw(st.lists(st.floats(-4, 4), min_size=groups * n, max_size=groups * n)))
    w = target_weights(adv, n, beta).reshape(groups, n)
    assert np.allclose(w.sum(1), 1.0) and (w >= 0).all()
    a = adv.reshape(groups, n)
    for g in range(groups):  # a larger r̂ never gets a smaller weight
        order = np.argsort(a[g], kind='stable')
        assert (np.diff(w[g][order]) >= -1e-12).all()
    xs, samples, mass = advantage_shares([{'adv': adv.tolist()}], n, beta)
    assert np.isclose(samples.sum(), 1.0) and np.isclose(mass.sum(), 1.0)


def test_time_left_counts_down_on_a_steady_run_and_follows_a_new_pace():
    from flowrl_nb.dashboard import time_left, fmt_left
    rng = np.random.default_rng(0)
    # 3 s steps with ±10% jitter, every 3rd step 2 s slower (a coverage measurement), a 90 s pause at step 60,
    # then from step 120 on twice as slow
    d = np.where(np.arange(1, 200) % 3 == 0, 5.0, 3.0) * rng.uniform(0.9, 1.1, 199)
    d[59] += 90; d[119:] *= 2
    times, total = np.r_[0, np.cumsum(d)].tolist(), 200
    est = {k: time_left(times[:k + 1], total - k, now=times[k]) for k in range(25, 200)}
    for k in range(25, 110):  # steady stretch: falls by the time that passed, within 5% of itself
        if k != 59: assert abs((est[k] - est[k + 1]) - d[k]) < 0.05 * est[k] + 2, (k, est[k], est[k + 1])
    assert abs(est[59] - est[60]) < 0.05 * est[59] + 5, (est[59], est[60])  # the pause is not the pace: no jump
    periodic = [time_left(times[:k + 1], total - k, now=times[k], period=3) for k in range(25, 59)]  # knowing the period
    for k, (a, b) in enumerate(zip(periodic, periodic[1:])): assert abs((a - b) - d[k + 25]) < 0.02 * a + 2, (k, a, b)
    pace = d[:59].mean()
    assert abs(est[40] / (pace * 160) - 1) < 0.1 and abs(est[145] / (2 * pace * 55) - 1) < 0.15, (est[40], est[145])
    shown = [fmt_left(est[k]) for k in range(25, 60)]
    assert all(s.endswith('m') or s.endswith('0s') for s in shown)  # rounded: to the minute, or to 10 s under 5 minutes


def test_runs_view_follows_a_growing_run(tmp_path):
    a = fake_run(tmp_path / 'a', steps=2); b = fake_run(tmp_path / 'b', steps=1, algorithm='grpo')
    view = RunsView([a, b], refresh=None)
    reward = lambda: [len(t.x) for t in view.time_figs['coverage'].data if 'reward mean' in t.hovertemplate]
    assert reward() == [2, 1]
    RunLog(b).log_step(2, {'reward/mean': 0.5}); view.refresh()
    assert reward() == [2, 2]
    view.close()


# --- a real kernel steers a run through the widgets ------------------------------------------------------------------

KERNEL_NB = [
    # build a trainer and a dashboard, start a short run in the background
    '''
    import html, time, json, threading, torch
    torch.set_num_threads(1)
    from flowrl_nb.config import FlowRLConfig
    from flowrl_nb.trainer import Trainer
    from flowrl_nb.dashboard import Dashboard
    from flowrl_nb.runlog import load_run
    tr = Trainer(FlowRLConfig(**{small}, max_steps=400, output_dir={run_dir!r}))
    dash = Dashboard(tr, refresh=0.2)
    # an enumerable task with coverage on: every coverage panel is there before the first step; FlowRL's log Z too
    assert len(dash.time_figs['coverage'].layout.meta['panels']) == 6
    assert 'mean log Z' in dash.time_figs['internals'].layout.meta['panels'] and dash.now_fig.layout.meta['enumerable']
    # every update "coverage now" sends to the browser, recorded as it is sent: none may empty a chart
    now_msgs = []
    dash.now_fig.observe(lambda ch: now_msgs.append(ch['new']), names=['_py2js_update', '_py2js_restyle', '_py2js_relayout'])
    dash
    ''',
    '''
    def until(cond, what, timeout=240):
        t0 = time.time()
        while not cond():
            assert time.time() - t0 < timeout, f'timed out waiting for {{what}}'
            time.sleep(0.05)
    dash.buttons['start'].click()
    until(lambda: tr.step_count >= 2, 'two steps')
    assert tr.running and tr.status == 'running' and dash.buttons['start'].disabled
    ''',
    # move β through the slider widget, as a click would
    '''
    dash.controls['beta'].value = 4.0
    s_at_change = tr.step_count
    assert tr.controls.pending == {{'beta': 4.0}}
    until(lambda: any(e['name'] == 'beta' for e in load_run(tr.run_dir).events), 'the β event')
    ev = [e for e in load_run(tr.run_dir).events if e['name'] == 'beta']
    assert [(e['old'], e['new']) for e in ev] == [(15.0, 4.0)], ev
    e = ev[0]['step']
    assert s_at_change < e <= s_at_change + 2, (s_at_change, e)      # the step running then, or the next one
    until(lambda: tr.step_count >= e, 'the step that applied it')
    by_step = {{m['step']: m for m in load_run(tr.run_dir).metrics}}
    assert by_step[e]['control/beta'] == 4.0 and by_step[e - 1]['control/beta'] == 15.0
    ''',
    # a refused value: the message shows next to the control, the slider snaps back, the run is untouched
    '''
    dash.controls['temperature'].value = 0.0
    assert dash.controls['temperature'].value == 1.0 and dash.sliders['temperature'].value == 1.0
    assert 'temperature must be in [0.001, 100], got 0.0' in html.unescape(dash._errors['temperature'].value)
    assert 'temperature' not in tr.controls.pending
    dash.controls['beta'].value = -3.0                               # typed: refused, not clamped to the slider's 0
    assert dash.controls['beta'].value == 4.0 and tr.controls.snapshot()['beta'] == 4.0
    assert 'beta must be in [0, 10000], got -3.0' in html.unescape(dash._errors['beta'].value)
    dash.controls['is_mode'].value = 'clip'                          # clip: the ε controls appear, the cap goes
    assert dash._rows['epsilon'].layout.display is None and dash._rows['is_cap'].layout.display == 'none'
    ''',
    # the charts and the table draw: the time charts mark the change
    '''
    until(lambda: len(dash.time_figs['internals'].data[0].x) >= e, 'the loss chart to catch up')
    assert any(s.label.text and s.label.text.startswith('β 15→4') for s in dash.time_figs['internals'].layout.shapes)
    until(lambda: len(dash.now_fig.data[1].x) > 0, 'the per-prompt coverage chart')  # exact coverage every 2 steps
    assert 'Recent completions' in dash.table.value and 'step ' in dash.status_line.value
    # "coverage now" was redrawn in place: each redraw one message, none setting a trace's data to nothing
    sent = [m for m in now_msgs if m]
    assert len(sent) >= 3, sent
    for m in sent:
        for key in ('x', 'y'):
            assert all(len(v) > 0 for v in (m.get('style_data') or {{}}).get(key, []) if isinstance(v, list)), m
    assert all(len(t.x) > 0 for t in dash.now_fig.data)
    ''',
    # Save checkpoint during the run: saved between two steps, and the run goes on
    '''
    s = tr.step_count
    dash.buttons['save'].click()
    until(lambda: 'saved' in dash.status_line.value, 'the checkpoint')
    assert tr.last_checkpoint.is_dir() and int(tr.last_checkpoint.name.split('-')[1]) >= s
    until(lambda: tr.step_count > s + 1, 'the run to go on after saving')
    assert tr.status == 'running'
    ''',
    # pause / resume / stop leave the trainer in the states they claim
    '''
    dash.buttons['pause'].click()
    until(lambda: tr.status == 'paused', 'pause')
    s = tr.step_count; time.sleep(1.0)
    assert tr.step_count == s and tr.running
    dash.refresh()
    assert dash.buttons['pause'].description == 'Resume' and '<b>paused</b>' in dash.status_line.value
    dash.buttons['pause'].click()
    until(lambda: tr.step_count > s, 'a step after resuming')
    assert tr.status == 'running'
    dash.buttons['stop'].click()
    until(lambda: not tr.running, 'the run to stop')
    assert tr.status == 'stopped' and tr.last_checkpoint.name == f'step-{{tr.step_count:06d}}'
    dash.refresh()
    assert '<b>stopped</b>' in dash.status_line.value and not dash.buttons['start'].disabled
    tr.error = RuntimeError('reward server unreachable'); dash.refresh()   # the last error shows in the status
    assert 'RuntimeError: reward server unreachable' in dash.status_line.value
    tr.error = None
    ''',
    # re-running the dashboard cell: the old view closes, never a second training thread
    '''
    old = dash
    dash = Dashboard(tr, refresh=0.2)
    assert not old.polling and dash.polling
    dash.buttons['start'].click(); dash.buttons['start'].click()      # a double click
    until(lambda: tr.step_count > s + 2, 'the restarted run')
    trainers = [t for t in threading.enumerate() if t.name.startswith('flowrl_nb-flowrl')]
    assert len(trainers) == 1, trainers
    dash.close(stop_run=True)
    until(lambda: not tr.running, 'the run to stop on close')
    assert not dash.polling and tr.status == 'stopped'
    print('steps', tr.step_count)
    ''',
]


def test_kernel_steers_a_run_through_the_widgets(tmp_path):
    nbformat = pytest.importorskip('nbformat')
    from nbclient import NotebookClient
    run_dir = str(tmp_path / 'run')
    cells = [nbformat.v4.new_code_cell(textwrap.dedent(c).format(small=SMALL, run_dir=run_dir).strip()) for c in KERNEL_NB]
    nb = nbformat.v4.new_notebook(cells=cells)
    NotebookClient(nb, timeout=300, kernel_name='python3', resources={'metadata': {'path': str(tmp_path)}}).execute()
    out = ''.join(o.get('text', '') for o in nb.cells[-1].outputs)
    assert 'steps' in out
    # the notebook saved the widget state: the dashboard's widgets are in it
    state = nb.metadata.get('widgets', {}).get('application/vnd.jupyter.widget-state+json', {}).get('state', {})
    assert any(v.get('model_name') == 'FloatSliderModel' for v in state.values())
    run = load_run(run_dir)
    assert [(e['name'], e['new']) for e in run.events][:2] == [('beta', 4.0), ('is_mode', 'clip')]
