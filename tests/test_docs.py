"""The docs site builds offline (`make docs`: tools/docs.py), passes tools/check_docs.py, and renders in a browser.

Building runs nbdev's docs processing over every notebook (each in a fresh process that imports the package), so
this is one of the slower tests (about a minute and a half on two busy cores). The browser test is skipped, with the
reason, only when Chromium or Playwright is not installed.
"""
import os, re, subprocess, sys
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / 'tools'))


def _run(*args, timeout=1800):
    env = {**os.environ, 'HF_HUB_OFFLINE': '1', 'TOKENIZERS_PARALLELISM': 'false'}
    return subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=env)


@pytest.fixture(scope='module')
def build():
    "Build the site once for this module; the result of `python tools/docs.py`."
    return _run('tools/docs.py')


def test_docs_build_and_check(build):
    assert build.returncode == 0, f'the docs build failed:\n{build.stdout[-3000:]}\n{build.stderr[-8000:]}'
    r = _run('tools/check_docs.py', '--site', str(ROOT / '_docs'))
    assert r.returncode == 0, f'the docs site has problems:\n{r.stdout[-2000:]}\n{r.stderr[-8000:]}'
    assert not re.search(r'(?<!\d)0 tutorial figures', r.stdout), r.stdout  # (not '10 tutorial figures')


def test_docs_in_browser(build):
    "The home page and a tutorial render in Chromium (even if another page failed to build: that is the test above)."
    import docs_browser
    why = docs_browser.missing()
    if why: pytest.skip(f'browser check of the docs skipped: {why}')
    assert (ROOT / '_docs' / 'index.html').exists(), f'no site was built:\n{build.stderr[-4000:]}'
    problems = docs_browser.check_pages()
    assert not problems, problems
    for page in docs_browser.DEFAULT_PAGES:
        shot = docs_browser.SHOTS / (page.replace('/', '__').replace('.html', '') + '.png')
        assert shot.exists() and shot.stat().st_size > 10_000, shot
