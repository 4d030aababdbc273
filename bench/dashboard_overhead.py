"""Step-time overhead of a live dashboard: the default tiny run with a `Dashboard` attached and updating, against
without it, measured alternately in one process. Goal: at most 3 % slower.

The measurement runs inside a real Jupyter kernel (started with nbclient), so widget and figure updates are
serialised and sent over the kernel's IOPub channel exactly as they are for a browser; only the browser's own
rendering is left out. Blocks of `--steps` training steps alternate with and without a dashboard in ABBA order
(with, without, without, with, ...), so a drift of the machine's speed or of the run itself cancels out.

    .venv/bin/python bench/dashboard_overhead.py             # ~2 min on 2 shared cores
    .venv/bin/python bench/dashboard_overhead.py --blocks 8 --steps 4

Exact coverage is off by default (`--coverage-steps 0`): one measurement of the default task takes seconds and would
bury a percent-level effect in its noise; the dashboard's work on a coverage step is one more chart update.
"""
import argparse, json, sys, tempfile, textwrap

KERNEL_CODE = '''
import json, statistics, tempfile, time, torch
torch.set_num_threads(1)
from IPython.display import display
from flowrl_nb.config import FlowRLConfig
from flowrl_nb.trainer import Trainer
from flowrl_nb.dashboard import Dashboard
tr = Trainer(FlowRLConfig(save_steps=0, coverage_steps={coverage_steps}, output_dir=tempfile.mkdtemp() + '/run'))
tr.train_step()  # warm-up: allocator, first compilation of kernels
times, points, work = {{'with': [], 'without': []}}, 0, {{'wall': 0.0, 'cpu': 0.0, 'calls': 0}}
for b in range({blocks}):
    for mode in (('with', 'without') if b % 2 == 0 else ('without', 'with')):
        dash = None
        if mode == 'with' and not {calibrate}:
            dash = Dashboard(tr, refresh={refresh}); display(dash)
            _refresh = dash.refresh
            def timed(*a, _refresh=_refresh, **k):  # the dashboard thread's own work, wall and CPU time
                t, c = time.perf_counter(), time.thread_time()
                try: return _refresh(*a, **k)
                finally: work['wall'] += time.perf_counter() - t; work['cpu'] += time.thread_time() - c; work['calls'] += 1
            dash.refresh = timed
            time.sleep(0.2)
        for _ in range({steps}):
            t = time.perf_counter(); tr.train_step(); times[mode].append(time.perf_counter() - t)
        if dash is not None:
            points = len(dash.time_figs['internals'].data[0].x)
            dash.close()
print('RESULT ' + json.dumps({{'times': times, 'points_drawn': points, 'work': work, 'steps': tr.step_count}}))
'''


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--blocks', type=int, default=6, help='blocks per mode (alternating ABBA)')
    p.add_argument('--steps', type=int, default=3, help='training steps per block')
    p.add_argument('--refresh', type=float, default=0.5, help="the dashboard's refresh interval, seconds")
    p.add_argument('--coverage-steps', type=int, default=0, help='exact coverage every N steps (0: off)')
    p.add_argument('--calibrate', action='store_true', help='A/A run: no dashboard in either arm (shows the noise level)')
    args = p.parse_args(argv)
    import nbformat, statistics
    from nbclient import NotebookClient
    code = textwrap.dedent(KERNEL_CODE).format(blocks=args.blocks, steps=args.steps, refresh=args.refresh,
                                               coverage_steps=args.coverage_steps, calibrate=args.calibrate)
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(code)])
    NotebookClient(nb, timeout=3600, kernel_name='python3', resources={'metadata': {'path': tempfile.mkdtemp()}}).execute()
    text = ''.join(o.get('text', '') for o in nb.cells[0].outputs if o.get('output_type') == 'stream')
    res = json.loads(text.split('RESULT ', 1)[1].splitlines()[0])
    w, wo = res['times']['with'], res['times']['without']
    mean_ratio = statistics.mean(w) / statistics.mean(wo)
    median_ratio = statistics.median(w) / statistics.median(wo)
    if args.calibrate: print('CALIBRATION (A/A): neither arm has a dashboard; the "overhead" below is noise')
    print(f'default tiny run, {args.blocks} blocks x {args.steps} steps per mode, dashboard refresh {args.refresh}s, '
          f'{res["steps"]} steps in all, {res["points_drawn"]} points on the last dashboard\'s loss chart')
    print(f'step time without dashboard: mean {statistics.mean(wo):.3f}s  median {statistics.median(wo):.3f}s')
    print(f'step time with dashboard:    mean {statistics.mean(w):.3f}s  median {statistics.median(w):.3f}s')
    n_with = len(w)
    if res['work']['calls']:
        wk = res['work']
        print(f'dashboard thread: {wk["calls"]} refreshes, {1000 * wk["cpu"] / n_with:.1f} ms CPU '
              f'({1000 * wk["wall"] / n_with:.1f} ms wall) per training step = '
              f'{100 * wk["cpu"] / sum(w):.2f}% of the step time')
    # paired blocks: each "with" block against the "without" block next to it
    k = args.steps
    pairs = [statistics.mean(w[i * k:(i + 1) * k]) / statistics.mean(wo[i * k:(i + 1) * k]) for i in range(args.blocks)]
    print(f'paired block ratios: median {statistics.median(pairs):.3f}, ' + ' '.join(f'{r:.3f}' for r in pairs))
    paired = statistics.median(pairs)
    verdict = 'OK' if paired <= 1.03 else 'ABOVE GOAL'
    print(f'overhead: {100 * (paired - 1):+.1f}% (median of paired blocks; goal <= +3%): {verdict}  '
          f'[ratio of medians {100 * (median_ratio - 1):+.1f}%, of means {100 * (mean_ratio - 1):+.1f}%]')
    return 0


if __name__ == '__main__':
    sys.exit(main())
