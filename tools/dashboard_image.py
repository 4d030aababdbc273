"""Regenerate nbs/images/dashboard.png, the dashboard picture on the README and the docs home page.

    python tools/dashboard_image.py

Runs the browser test (tests/test_dashboard_browser.py::test_dashboard_in_jupyterlab): a real run of the built-in task
in JupyterLab, in headless Chromium at 1,400 × 900 px, the run in `runs/flowrl-digits` beside the notebook. The test
saves its screenshots in build/dashboard-image/; this copies the first screen (the dashboard as a user sees it after
running its cell: controls, status and coverage now) to nbs/images/dashboard.png. Look at it before committing it.
"""
import os, shutil, subprocess, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / 'build' / 'dashboard-image'
IMAGE = ROOT / 'nbs' / 'images' / 'dashboard.png'


def main() -> int:
    if OUT.exists(): shutil.rmtree(OUT)
    env = dict(os.environ, FLOWRL_NB_TEST_OUTPUT=str(OUT), HF_HUB_OFFLINE='1', TRANSFORMERS_OFFLINE='1',
               TOKENIZERS_PARALLELISM='false', OMP_NUM_THREADS='1')
    cmd = [sys.executable, '-m', 'pytest', 'tests/test_dashboard_browser.py::test_dashboard_in_jupyterlab', '-q', '-s',
           '-p', 'no:cacheprovider']
    if subprocess.run(cmd, cwd=ROOT, env=env).returncode != 0:
        print('the browser test failed: nbs/images/dashboard.png is unchanged', file=sys.stderr); return 1
    shot = OUT / 'dashboard-first-screen.png'
    if not shot.exists():
        print(f'{shot} is missing (did the test skip? it needs Chromium)', file=sys.stderr); return 1
    shutil.copyfile(shot, IMAGE)
    print(f'{IMAGE} <- {shot} ({IMAGE.stat().st_size:,} bytes); the other screenshots are in {OUT}')
    return 0


if __name__ == '__main__': sys.exit(main())
