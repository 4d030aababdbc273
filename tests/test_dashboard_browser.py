"""The dashboard in a real browser: JupyterLab + Debian Chromium driven by Playwright.

Opens a notebook that builds a trainer and a dashboard, runs it from the page at 1,400 × 900 px (JupyterLab's file
browser open, as a new user has it), and checks what a user sees: the controls column beside the charts, so a slider
and the chart it moves are on screen together, the controls staying in view while the charts scroll; a dragged β
slider reaching the metrics log and the charts; −3 typed into β's box refused with the config's message beside the
control, the box back to the value in force and the trainer's β unchanged; "coverage now" never drawing an empty
chart once it has bars; the charts growing while the run goes on; the columns stacking in a narrow window; no
bitsandbytes notice in the output and no browser console errors. Saves screenshots in the test's output directory
($FLOWRL_NB_TEST_OUTPUT, else pytest's tmp_path): dashboard-first-screen.png, dashboard-beta-changed.png,
dashboard-validation.png, dashboard-narrow.png. `tools/dashboard_image.py` runs this test and copies the first screen
to nbs/images/dashboard.png. Skips only when Chromium is missing.
"""
import contextlib, json, os, re, signal, socket, subprocess, sys, textwrap, time, urllib.request
from pathlib import Path
import pytest
from flowrl_nb.runlog import load_run

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / 'tools'))
from docs_browser import CHROMIUM_ARGS, chromium  # noqa: E402

CHROMIUM = chromium()
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason='Chromium is not installed (apt-get install -y chromium); '
                                                          'the browser test needs the Debian binary')

NOTEBOOK = ['''
import torch
torch.set_num_threads(1)
from flowrl_nb.config import FlowRLConfig
from flowrl_nb.trainer import Trainer
from flowrl_nb.dashboard import Dashboard
tr = Trainer(FlowRLConfig(prompts_per_step=4, num_generations=4, save_steps=0, max_steps=400, coverage_steps=2,
                          output_dir='runs/flowrl-digits'))  # the built-in task: coverage measured in the background
''', '''
dash = Dashboard(tr)
dash
''']


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
def notebook_page(tmp_path, out: Path, name: str, source, height: int):
    """Write a notebook `name` with `source` (a cell's code, or a list of cells'), open it in JupyterLab in Chromium
    at 1,400 px wide, run it and yield `(page, errors)` (console and page errors as they happen); JupyterLab and the
    browser stop afterwards."""
    from playwright.sync_api import sync_playwright
    sources = [source] if isinstance(source, str) else list(source)
    nb = {'cells': [{'cell_type': 'code', 'execution_count': None, 'id': f'cell{i}', 'metadata': {}, 'outputs': [],
                     'source': src.strip()} for i, src in enumerate(sources)],
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


def beta_slider(page):
    "The β slider (the slider whose label is β)."
    return page.locator('.widget-hslider', has=page.locator('.widget-label', has_text='β')).first


def beta_box(page):
    "The input of β's number box, beside its slider."
    return page.locator('.widget-hbox', has=beta_slider(page)).locator('.widget-text input').first


def drag_beta_to_a_tenth(page):
    "Drag the β slider's handle to about a tenth of its track (β ≈ 5 on 0-50), with the mouse."
    slider = beta_slider(page)
    track = slider.locator('.slider-container').bounding_box()
    handle = slider.locator('.noUi-handle').bounding_box()
    page.mouse.move(handle['x'] + handle['width'] / 2, handle['y'] + handle['height'] / 2)
    page.mouse.down()
    page.mouse.move(track['x'] + 0.1 * track['width'], handle['y'] + handle['height'] / 2, steps=8)
    page.mouse.up()
    return slider


# JavaScript run in the page: run code in the notebook's kernel (idle: the run trains in its own thread), return what it printed
JS_KERNEL = """async (code) => {
  const kernel = window.jupyterapp.shell.currentWidget.sessionContext.session.kernel;
  const future = kernel.requestExecute({code, store_history: false});
  let out = '';
  future.onIOPub = m => { if (m.header.msg_type === 'stream') out += m.content.text;
                          if (m.header.msg_type === 'error') out += m.content.ename + ': ' + m.content.evalue; };
  await future.done;
  return out;
}"""

# Every animation frame, the number of bars drawn by each trace of the "coverage now" graph (the dashboard's first)
JS_WATCH_BARS = """() => {
  const g = document.querySelector('.jp-OutputArea .flowrl-dash-charts .js-plotly-plot');
  window.__bars = [];
  const tick = () => {
    window.__bars.push([...g.querySelectorAll('.barlayer .trace')].map(t => t.querySelectorAll('.point').length));
    if (!window.__stopBars) requestAnimationFrame(tick);
  };
  requestAnimationFrame(tick);
}"""


def box(locator):
    "A locator's bounding box, as (left, top, right, bottom) in viewport pixels."
    b = locator.bounding_box()
    return b['x'], b['y'], b['x'] + b['width'], b['y'] + b['height']


def on_screen(locator, height: int) -> bool:
    "True if some of `locator` is inside a viewport `height` px tall."
    l, t, r, b = box(locator)
    return b > 0 and t < height


def scroll_notebook(page, dy: int):
    "Scroll the notebook's own scrolling area (the page itself does not scroll in JupyterLab) by `dy` px."
    page.evaluate(f"() => document.querySelector('.jp-WindowedPanel-outer').scrollBy(0, {dy})")
    page.wait_for_timeout(400)


def kernel(page, code: str) -> str:
    return page.evaluate(JS_KERNEL, code)


def test_dashboard_in_jupyterlab(tmp_path):
    out, run_dir, W, H = output_dir(tmp_path), tmp_path / 'runs' / 'flowrl-digits', 1400, 900
    with notebook_page(tmp_path, out, 'dashboard.ipynb', NOTEBOOK, H) as (page, errors):
        button = dashboard_buttons(page, 120_000)  # the dashboard renders: the Start button and the β slider
        outputs = ' '.join(page.locator('.jp-OutputArea-output').all_inner_texts())
        assert 'kernels-community' not in outputs and 'Traceback' not in outputs, outputs  # no bitsandbytes notice reaches the user
        button('Start').click()
        until(lambda: len(load_run(run_dir).metrics) >= 2, 'two steps in the log', 120)
        before = until(lambda: (lambda r: r if r['graphs'] >= 3 and sum(r['drawn']) > 0 else None)(page.evaluate(JS_POINTS)),
                       'the charts to draw points', 60)
        page.evaluate(JS_WATCH_BARS)
        # the first screen: the dashboard scrolled to the top of the notebook, as after running its cell
        dash = page.locator('.jp-OutputArea .flowrl-dash').first
        dash.evaluate('e => e.scrollIntoView({block: "start"})'); page.wait_for_timeout(300)
        controls, charts = page.locator('.flowrl-dash-controls').first, page.locator('.flowrl-dash-charts').first
        now = page.locator('.flowrl-dash-charts .js-plotly-plot').first
        assert box(controls)[2] <= box(charts)[0] + 1, (box(controls), box(charts))  # side by side: controls on the left
        assert box(controls)[2] - box(controls)[0] <= 400, box(controls)
        for what, loc in (('β slider', beta_slider(page)), ('β box', beta_box(page)), ('coverage now', now)):
            assert on_screen(loc, H), f'{what} is not on the first screen: {box(loc)}'
        until(lambda: now.locator('.barlayer .trace').count() >= 5 and now.locator('.barlayer .trace').nth(1).locator('.point').count() > 0,
              "coverage now to draw the first measurement's bars", 120)
        page.wait_for_timeout(500)
        page.screenshot(path=str(out / 'dashboard-first-screen.png'))
        # drag β with the mouse: it reaches the log, the box shows it, the time charts mark it
        slider = drag_beta_to_a_tenth(page)
        ev = until(lambda: [e for e in load_run(run_dir).events if e['name'] == 'beta'], 'the β change in the log', 60)
        assert len(ev) == 1 and ev[0]['old'] == 15.0 and 2.0 <= ev[0]['new'] <= 8.0, ev
        new_beta, e_step = ev[0]['new'], ev[0]['step']
        until(lambda: any(m['step'] == e_step for m in load_run(run_dir).metrics), 'the step that applied it', 60)
        applied = [m for m in load_run(run_dir).metrics if m['step'] == e_step][0]
        assert applied['control/beta'] == new_beta
        assert abs(float(beta_box(page).input_value()) - new_beta) < 1e-6, beta_box(page).input_value()
        page.wait_for_selector(f'.jp-OutputArea .js-plotly-plot text:has-text("β 15→{new_beta:g}")', timeout=30_000)
        # scroll down to the objective internals: the controls stay in view beside them (the column is sticky)
        scroll_notebook(page, 700)
        cov_time = page.locator('.flowrl-dash-charts .js-plotly-plot').nth(1)
        assert on_screen(cov_time, H) and on_screen(beta_slider(page), H), (box(cov_time), box(beta_slider(page)))
        internals = page.locator('.flowrl-dash-charts .js-plotly-plot').nth(2)
        internals.evaluate('e => e.scrollIntoView({block: "start"})'); page.wait_for_timeout(400)
        assert on_screen(internals, H) and 0 <= box(beta_slider(page))[1] < H, (box(internals), box(beta_slider(page)))
        assert internals.locator('text:has-text("ref_kl = mean(log π_ref − log π)")').count() == 1  # its formula, in its title
        page.wait_for_timeout(1000)
        page.screenshot(path=str(out / 'dashboard-beta-changed.png'))
        dash.evaluate('e => e.scrollIntoView({block: "start"})'); page.wait_for_timeout(400)
        # type -3 into β's box: refused with the config's message beside it, the box back at the β in force
        beta_box(page).fill('-3'); beta_box(page).press('Enter')
        msg = page.locator('.flowrl-dash-controls', has_text='beta must be in [0, 10000], got -3.0').first
        msg.wait_for(timeout=10_000)
        until(lambda: abs(float(beta_box(page).input_value()) - new_beta) < 1e-6, 'the β box back at the value in force', 10)
        assert on_screen(page.locator('.flowrl-dash-controls :text("beta must be in")').first, H)
        said = kernel(page, "print(tr.controls.snapshot()['beta'], tr.controls.pending.get('beta'))").split()
        assert float(said[0]) == new_beta and said[1] == 'None', said          # the trainer never saw -3
        page.screenshot(path=str(out / 'dashboard-validation.png'))
        # the charts grow while the run goes on
        n0 = len(load_run(run_dir).metrics)
        until(lambda: len(load_run(run_dir).metrics) >= n0 + 3, 'three more steps', 120)
        after = until(lambda: (lambda r: r if sum(r['data']) > sum(before['data']) and sum(r['drawn']) > sum(before['drawn'])
                               else None)(page.evaluate(JS_POINTS)), 'the charts to grow', 30)
        # what a user's run shows: the run's own name, no temporary path, no warning output (this is the README's picture)
        shown = page.locator('.jp-NotebookPanel:visible').first.inner_text()
        assert 'runs/flowrl-digits' in shown and str(tmp_path) not in shown and '/tmp/' not in shown, shown[:2000]
        stderr = page.locator('.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]')
        assert not stderr.count(), stderr.all_inner_texts()
        # "coverage now" never showed an empty chart once it had bars (sampled every animation frame)
        bars = page.evaluate('() => { window.__stopBars = true; return window.__bars; }')
        first = next(i for i, b in enumerate(bars) if sum(b) > 0)
        emptied = [b for b in bars[first:] if sum(b) == 0 or len(b) < len(bars[first])]
        assert len(bars) - first > 100 and not emptied, (len(bars), first, emptied[:5])
        status = re.sub(r'\s+', ' ', page.locator('.flowrl-dash-controls').first.inner_text())[:300]
        print(f'screenshots in {out}; points before {before}, after {after}; {len(bars)} frames of coverage now, none empty; '
              f'controls column: {status}')
        # a narrow window: the charts go below the controls, which scroll with the page
        page.set_viewport_size({'width': 900, 'height': H})
        page.wait_for_timeout(1500)
        dash.evaluate('e => e.scrollIntoView({block: "start"})'); page.wait_for_timeout(300)
        assert box(charts)[1] >= box(controls)[3] - 1, (box(controls), box(charts))  # stacked
        assert page.locator('.flowrl-dash-controls').first.evaluate('e => getComputedStyle(e).position') != 'sticky'
        page.screenshot(path=str(out / 'dashboard-narrow.png'))
        page.set_viewport_size({'width': W, 'height': H})
        # stop from the page; the status line says so
        button('Stop').click()
        page.wait_for_selector('.jp-OutputArea b:has-text("stopped")', timeout=90_000)
    assert not errors, '\n'.join(errors)
    run = load_run(run_dir)
    assert (run_dir / 'checkpoints').is_dir() and run.metrics[-1]['control/beta'] == new_beta
    assert not [e for e in run.events if e['name'] == 'beta' and e['new'] < 0]


def _ok(url) -> bool:
    try: http(url); return True
    except Exception: return False


TRL_NOTEBOOK = '''
import torch
torch.set_num_threads(1)
from flowrl_nb.dashboard import Dashboard
from flowrl_nb.model import resolve_model_path
from flowrl_nb.task import DigitSumTask
from flowrl_nb.trl import FlowRLGRPOConfig, FlowRLGRPOTrainer, TRLRun
from datasets import Dataset
from peft import LoraConfig
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
        assert 'kernels-community' not in ' '.join(page.locator('.jp-OutputArea-output').all_inner_texts())
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
