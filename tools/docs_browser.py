"""Open the built docs site in a real browser and save screenshots: `python tools/docs_browser.py [page ...]`.

Serves `_docs/` from a local http.server on 127.0.0.1 (a free port, stopped in a `finally`), opens the home page and
one tutorial in headless Debian Chromium through Playwright (never `playwright install`: it downloads a browser),
checks that each page rendered (title, sidebar, no JavaScript errors; on pages with Plotly figures, that plotly.js
drew them) and saves full-page screenshots to build/docs-screenshots/. Exits 0 on success, 1 on a failed check, and
2 when Chromium or Playwright is missing (the pytest wrapper turns that into a skip).
"""
from __future__ import annotations
import functools, http.server, shutil, sys, threading
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SITE = ROOT / '_docs'
SHOTS = ROOT / 'build' / 'docs-screenshots'
DEFAULT_PAGES = ('index.html', 'tutorials/reading_the_objective.html', 'tutorials/flowrl_on_a_real_llm.html',
                 'explanations/when_does_flowrl_match.html', 'seeds.html')  # the last two: issue 21's study and its module
CHROMIUM_ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking',
                 '--disable-component-update', '--disable-sync']


def chromium() -> str | None:
    "Path of a Chromium-family browser: Debian's `chromium` first (what these machines use), then the usual others."
    for name in ('chromium', 'chromium-browser', 'google-chrome', 'google-chrome-stable'):
        if path := shutil.which(name): return path
    return None


def missing() -> str | None:
    "Why the browser check cannot run here, or None."
    if not chromium(): return 'Chromium is not installed (apt-get install -y chromium)'
    try: import playwright.sync_api  # noqa: F401
    except ImportError: return 'Playwright is not installed (pip install playwright; never `playwright install`)'
    return None


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *a): pass


def check_pages(pages=DEFAULT_PAGES, site: Path = SITE, shots: Path = SHOTS) -> list[str]:
    "Open each page, check it and save a screenshot; return the problems found (empty when all is well)."
    from playwright.sync_api import sync_playwright
    shots.mkdir(parents=True, exist_ok=True)
    server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), functools.partial(_Quiet, directory=str(site)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    problems = []
    try:
        base = f'http://127.0.0.1:{server.server_address[1]}/'
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=chromium(), args=CHROMIUM_ARGS)
            try:
                page = browser.new_page(viewport={'width': 1280, 'height': 900})
                errors = []
                page.on('pageerror', lambda e: errors.append(str(e)))
                for name in pages:
                    errors.clear()
                    resp = page.goto(base + name, wait_until='load')
                    if resp is None or resp.status != 200:
                        problems.append(f'{name}: HTTP {resp.status if resp else "no response"}'); continue
                    title = page.locator('h1.title').inner_text().strip()
                    nav = page.locator('nav.sidebar a').count()
                    figs = page.locator('.plotly-graph-div').count()
                    if figs:  # plotly.js draws an SVG into every figure it rendered
                        page.wait_for_function('[...document.querySelectorAll(".plotly-graph-div")]'
                                               f'.every(d => d.querySelector(".main-svg"))', timeout=30000)
                    drawn = page.evaluate('[...document.querySelectorAll(".plotly-graph-div")]'
                                          '.filter(d => d.querySelector(".main-svg")).length')
                    maths = page.locator('math').count()
                    stem = name.replace('/', '__').replace('.html', '')
                    out = shots / f'{stem}.png'
                    page.screenshot(path=str(out), full_page=True)           # the whole page
                    page.screenshot(path=str(shots / f'{stem}_top.png'))      # what a reader sees first
                    if figs:                                                  # the first figure, up close
                        page.locator('.plotly-graph-div').first.screenshot(path=str(shots / f'{stem}_figure.png'))
                    print(f'{name}: title {title!r}, {nav} sidebar links, {figs} figures ({drawn} drawn), '
                          f'{maths} formulas -> {out.relative_to(ROOT)}')
                    if not title: problems.append(f'{name}: no page title')
                    if nav < 3: problems.append(f'{name}: the sidebar has only {nav} links')
                    if errors: problems.append(f'{name}: JavaScript errors: {errors}')
            finally:
                browser.close()
    finally:
        server.shutdown(); server.server_close(); thread.join(timeout=10)
    return problems


if __name__ == '__main__':
    why = missing()
    if why: print(f'SKIPPED: browser check of the docs: {why}', file=sys.stderr); sys.exit(2)
    if not (SITE / 'index.html').exists():
        print('FAILED: _docs/index.html does not exist: build the site first (make docs)', file=sys.stderr); sys.exit(1)
    problems = check_pages(sys.argv[1:] or DEFAULT_PAGES)
    for p in problems: print('FAILED:', p, file=sys.stderr)
    sys.exit(1 if problems else 0)
