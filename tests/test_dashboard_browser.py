"""The dashboard in a real browser: JupyterLab + Debian Chromium driven by Playwright.

Opens a notebook that builds a trainer and a dashboard, runs it from the page, drags the β slider with the mouse, and
checks that the change reaches the metrics log, that the charts draw points that grow while the run goes on, and that
the browser console shows no errors. Saves a screenshot (`dashboard.png`) in the test's output directory
($FLOWRL_NB_TEST_OUTPUT, else pytest's tmp_path). Skips only when Chromium is missing.
"""
import contextlib, json, os, signal, socket, subprocess, sys, textwrap, time, urllib.request
from pathlib import Path
import pytest
from flowrl_nb.runlog import load_run

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / 'tools'))
from docs_browser import CHROMIUM_ARGS, chromium  # noqa: E402

CHROMIUM = chromium()
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason='Chromium is not installed (apt-get install -y chromium); '
                                                          'the browser test needs the Debian binary')

NOTEBOOK = '''
import torch
torch.set_num_threads(1)
from flowrl_nb.config import FlowRLConfig
from flowrl_nb.trainer import Trainer
from flowrl_nb.dashboard import Dashboard
tr = Trainer(FlowRLConfig(prompts_per_step=4, num_generations=4, save_steps=0, max_steps=400, coverage_steps=2,
                          output_dir={run_dir!r}))  # the built-in task: coverage measured in the background
dash = Dashboard(tr)
dash
'''


def free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0)); return s.getsockname()[1]


def http(url, method='GET'):
    req = urllib.request.Request(url, method=method)
    with urllib.request.urlopen(req, timeout=10) as r: return r.read()


def until(cond, what, timeout):
    t0 = time.time()
    while True:
        v = cond()
        if v: return v
        if time.time() - t0 > timeout: raise AssertionError(f'timed out after {timeout}s waiting for {what}')
        time.sleep(0.25)


def start_lab(root: Path, port: int, log_path: Path) -> subprocess.Popen:
    "JupyterLab on 127.0.0.1:port, empty token, its own config/runtime/settings dirs, no network checks."
    home = root / '.jupyter-home'
    env = dict(os.environ, JUPYTER_CONFIG_DIR=str(home / 'config'), JUPYTER_RUNTIME_DIR=str(home / 'runtime'),
               JUPYTERLAB_SETTINGS_DIR=str(home / 'settings'), JUPYTERLAB_WORKSPACES_DIR=str(home / 'workspaces'),
               IPYTHONDIR=str(home / 'ipython'), HF_HUB_OFFLINE='1', TRANSFORMERS_OFFLINE='1', TOKENIZERS_PARALLELISM='false')
    # no "get notified about news?" toast, no update checks
    settings = home / 'settings' / '@jupyterlab' / 'apputils-extension'
    settings.mkdir(parents=True, exist_ok=True)
    (settings / 'notification.jupyterlab-settings').write_text(json.dumps({'fetchNews': 'false', 'checkForUpdates': False}))
    cmd = [sys.executable, '-m', 'jupyterlab', '--no-browser', '--allow-root', f'--ServerApp.root_dir={root}',
           '--ServerApp.ip=127.0.0.1', f'--ServerApp.port={port}', '--ServerApp.port_retries=0',
           "--IdentityProvider.token=", '--ServerApp.password=', '--ServerApp.disable_check_xsrf=True',  # lets the test's DELETE through
           '--LabApp.expose_app_in_browser=True',
           '--LabApp.news_url=', '--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate',
           '--LabApp.extension_manager=readonly']
    return subprocess.Popen(cmd, cwd=root, env=env, stdout=open(log_path, 'wb'), stderr=subprocess.STDOUT,
                            start_new_session=True)


def stop_lab(proc: subprocess.Popen, base: str):
    "Shut down the kernels through the API, then the server by its PID (SIGTERM, then SIGKILL)."
    try:
        for k in json.loads(http(f'{base}/api/kernels')): http(f'{base}/api/kernels/{k["id"]}', 'DELETE')
    except Exception: pass
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try: proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill(); proc.wait(10)


# JavaScript run in the page: the plotly graphs of the dashboard's output, their data points and drawn points
JS_POINTS = '''() => {
  const gds = [...document.querySelectorAll('.jp-OutputArea .js-plotly-plot')];
  const data = gds.map(g => (g.data || []).reduce((n, t) => n + ((t.x && t.x.length) || 0), 0));
  const drawn = gds.map(g => g.querySelectorAll('.scatterlayer .point, .barlayer .point').length);
  return {graphs: gds.length, data, drawn};
}'''


@contextlib.contextmanager
def notebook_page(tmp_path, out: Path, name: str, source: str, height: int):
    """Write a one-cell notebook `name` with `source`, open it in JupyterLab in Chromium at 1,400 px wide, run it and
    yield `(page, errors)` (console and page errors as they happen); JupyterLab and the browser stop afterwards."""
    from playwright.sync_api import sync_playwright
    nb = {'cells': [{'cell_type': 'code', 'execution_count': None, 'id': 'dashboard', 'metadata': {}, 'outputs': [],
                     'source': source.strip()}],
          'metadata': {'kernelspec': {'display_name': 'Python 3', 'language': 'python', 'name': 'python3'}},
          'nbformat': 4, 'nbformat_minor': 5}
    (tmp_path / name).write_text(json.dumps(nb))
    port = free_port(); base = f'http://127.0.0.1:{port}'
    log = out / f'jupyterlab-{Path(name).stem}.log'
    lab = start_lab(tmp_path, port, log)
    errors = []
    try:
        until(lambda: lab.poll() is not None or _ok(f'{base}/api/status'), 'JupyterLab to answer', 60)
        assert lab.poll() is None, log.read_text()[-3000:]
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            try:
                page = browser.new_page(viewport={'width': 1400, 'height': height})
                page.on('console', lambda m: errors.append(f'console.{m.type}: {m.text}') if m.type == 'error' else None)
                page.on('pageerror', lambda e: errors.append(f'page error: {e}'))
                page.set_default_timeout(60_000)
                page.goto(f'{base}/lab/tree/{name}?reset')
                page.wait_for_selector('.jp-Notebook .jp-Cell')
                page.wait_for_function('() => window.jupyterapp && window.jupyterapp.shell.currentWidget '
                                       '&& window.jupyterapp.shell.currentWidget.sessionContext '
                                       '&& window.jupyterapp.shell.currentWidget.sessionContext.session '
                                       '&& window.jupyterapp.shell.currentWidget.sessionContext.session.kernel')
                page.evaluate("() => window.jupyterapp.commands.execute('notebook:run-all-cells')")
                yield page, errors
            finally:
                browser.close()
    finally:
        stop_lab(lab, base)
    assert lab.poll() is not None


def output_dir(tmp_path) -> Path:
    "Where screenshots and logs go: $FLOWRL_NB_TEST_OUTPUT, else the test's tmp_path."
    out = Path(os.environ.get('FLOWRL_NB_TEST_OUTPUT', tmp_path)); out.mkdir(parents=True, exist_ok=True)
    return out


def dashboard_buttons(page, timeout_ms: int):
    "Wait until the dashboard's Start button renders; return a lookup of its buttons by label."
    page.wait_for_selector('.jp-OutputArea .widget-button:has-text("Start")', timeout=timeout_ms)
    return lambda name: page.locator('.jp-OutputArea .widget-button', has_text=name).first


def drag_beta_to_a_tenth(page):
    "Drag the β slider's handle to about a tenth of its track (β ≈ 5 on 0-50), with the mouse."
    slider = page.locator('.widget-hslider', has=page.locator('.widget-label', has_text='β')).first
    track = slider.locator('.slider-container').bounding_box()
    handle = slider.locator('.noUi-handle').bounding_box()
    page.mouse.move(handle['x'] + handle['width'] / 2, handle['y'] + handle['height'] / 2)
    page.mouse.down()
    page.mouse.move(track['x'] + 0.1 * track['width'], handle['y'] + handle['height'] / 2, steps=8)
    page.mouse.up()
    return slider


def test_dashboard_in_jupyterlab(tmp_path):
    # a run directory named as a user's would be, relative to the notebook (the screenshot is the README's picture:
    # it must not show a temporary path)
    out, run_dir = output_dir(tmp_path), tmp_path / 'runs' / 'flowrl-demo'
    with notebook_page(tmp_path, out, 'dashboard.ipynb', NOTEBOOK.format(run_dir='runs/flowrl-demo'), 3400) as (page, errors):
        button = dashboard_buttons(page, 120_000)  # the dashboard renders: the Start button and the β slider
        button('Start').click()
        until(lambda: len(load_run(run_dir).metrics) >= 2, 'two steps in the log', 120)
        before = until(lambda: (lambda r: r if r['graphs'] >= 3 and sum(r['drawn']) > 0 else None)(page.evaluate(JS_POINTS)),
                       'the charts to draw points', 60)
        slider = drag_beta_to_a_tenth(page)
        ev = until(lambda: [e for e in load_run(run_dir).events if e['name'] == 'beta'], 'the β change in the log', 60)
        assert len(ev) == 1 and ev[0]['old'] == 15.0 and 2.0 <= ev[0]['new'] <= 8.0, ev
        new_beta, e_step = ev[0]['new'], ev[0]['step']
        until(lambda: any(m['step'] == e_step for m in load_run(run_dir).metrics), 'the step that applied it', 60)
        applied = [m for m in load_run(run_dir).metrics if m['step'] == e_step][0]
        assert applied['control/beta'] == new_beta
        # the page shows the change: the slider's readout, and the event line's label on the charts
        readout = slider.locator('.widget-readout').inner_text()
        assert abs(float(readout) - new_beta) < 1e-6, readout
        page.wait_for_selector(f'.jp-OutputArea .js-plotly-plot text:has-text("β 15→{new_beta:g}")', timeout=30_000)
        # the charts grow while the run goes on
        n0 = len(load_run(run_dir).metrics)
        until(lambda: len(load_run(run_dir).metrics) >= n0 + 3, 'three more steps', 120)
        after = until(lambda: (lambda r: r if sum(r['data']) > sum(before['data']) and sum(r['drawn']) > sum(before['drawn'])
                               else None)(page.evaluate(JS_POINTS)), 'the charts to grow', 30)
        page.wait_for_timeout(1500)  # let the last redraw land before the picture
        page.screenshot(path=str(out / 'dashboard.png'), full_page=True)
        print(f'screenshot: {out / "dashboard.png"}; points before {before}, after {after}')
        # the picture (nbs/images/dashboard.png) shows what a user's run shows: the run's own name, no temporary path,
        # no warning output (bitsandbytes' import-time 'kernels' notice is dropped by flowrl_nb.model)
        shown = page.locator('.jp-NotebookPanel:visible').first.inner_text()
        assert 'runs/flowrl-demo' in shown and str(tmp_path) not in shown and '/tmp/' not in shown, shown[:2000]
        assert not page.locator('.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]').count(), \
            page.locator('.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]').all_inner_texts()
        # stop from the page; the status line says so
        button('Stop').click()
        page.wait_for_selector('.jp-OutputArea b:has-text("stopped")', timeout=90_000)
    assert not errors, '\n'.join(errors)
    run = load_run(run_dir)
    assert (run_dir / 'checkpoints').is_dir() and run.metrics[-1]['control/beta'] == new_beta


def _ok(url) -> bool:
    try: http(url); return True
    except Exception: return False


TRL_NOTEBOOK = '''
import torch
torch.set_num_threads(1)
from datasets import Dataset
from peft import LoraConfig
from flowrl_nb.dashboard import Dashboard
from flowrl_nb.model import resolve_model_path
from flowrl_nb.task import DigitSumTask
from flowrl_nb.trl import FlowRLGRPOConfig, FlowRLGRPOTrainer, TRLRun
task = DigitSumTask()
args = FlowRLGRPOConfig(output_dir={run_dir!r}, per_device_train_batch_size=16, num_generations=8, max_completion_length=4,
                        learning_rate=1e-3, z_learning_rate=1e-2, max_steps=400, logging_steps=1, save_strategy='no',
                        report_to='none', use_cpu=True, bf16=False, gradient_checkpointing=False, seed=0,
                        disable_tqdm=True)
trainer = FlowRLGRPOTrainer(model=resolve_model_path('tiny'), reward_funcs=task.reward, args=args,
                            train_dataset=Dataset.from_list(task.rows(n=4096, seed=0)),
                            peft_config=LoraConfig(r=16, target_modules='all-linear', task_type='CAUSAL_LM'))
dash = Dashboard(TRLRun(trainer))
dash
'''


def test_dashboard_drives_a_trl_run_in_jupyterlab(tmp_path):
    "The same dashboard on FlowRL-on-TRL (`TRLRun`): Start from the page, charts fill, a dragged β lands, Stop saves."
    out, run_dir = output_dir(tmp_path), tmp_path / 'runs' / 'flowrl-trl'
    with notebook_page(tmp_path, out, 'trl_dashboard.ipynb', TRL_NOTEBOOK.format(run_dir='runs/flowrl-trl'), 3000) as (page, errors):
        button = dashboard_buttons(page, 180_000)
        button('Start').click()
        until(lambda: run_dir.joinpath('metrics.jsonl').exists() and len(load_run(run_dir).metrics) >= 2,
              'two steps in the log', 180)
        until(lambda: (lambda r: r if r['graphs'] >= 3 and sum(r['drawn']) > 0 else None)(page.evaluate(JS_POINTS)),
              'the charts to draw points', 60)
        drag_beta_to_a_tenth(page)
        ev = until(lambda: [e for e in load_run(run_dir).events if e['name'] == 'beta'], 'the β change in the log', 60)
        assert len(ev) == 1 and ev[0]['old'] == 15.0 and 2.0 <= ev[0]['new'] <= 8.0, ev
        page.wait_for_selector(f'.jp-OutputArea .js-plotly-plot text:has-text("β 15→{ev[0]["new"]:g}")', timeout=30_000)
        n0 = len(load_run(run_dir).metrics)
        until(lambda: len(load_run(run_dir).metrics) >= n0 + 2, 'two more steps', 120)
        page.wait_for_timeout(1500)
        page.screenshot(path=str(out / 'dashboard-trl.png'), full_page=True)
        print(f'screenshot: {out / "dashboard-trl.png"}')
        button('Stop').click()
        page.wait_for_selector('.jp-OutputArea b:has-text("stopped")', timeout=90_000)
    assert not errors, '\n'.join(errors)
    ckpts = sorted(run_dir.glob('checkpoint-*'))
    assert ckpts and (ckpts[-1] / 'z_head.safetensors').exists() and (ckpts[-1] / 'flowrl_controls.json').exists()
