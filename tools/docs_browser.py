"""Open the built docs site in a real browser, check what a reader sees and save screenshots: `python tools/docs_browser.py`.

Serves `_docs/` from a local http.server on 127.0.0.1 (a free port, stopped in a `finally`) and opens it in headless
Debian Chromium through Playwright (never `playwright install`: it downloads a browser), 1,400 px wide, scrollbars
shown as a reader's browser shows them. On every page it checks: the title and the sidebar; the on-page table of contents
(a link per h2/h3) and the previous/next links; every formula typeset by KaTeX without an error; no horizontal scrolling
of the page (wide code, tables and formulas scroll inside their box); no JavaScript errors; Plotly figures drawn. On the
screenshot pages it also scrolls to the bottom and checks that the sidebar and the contents column are still in view.
Then it types a query into the search box and checks that a result links to the expected section, over http and from
file://. Screenshots go to build/docs-screenshots/ (`<page>_top.png` what a reader sees first, `<page>.png` the whole
page, `<page>_scrolled.png` half-way down, `<page>_bottom.png` its end, `<page>_table.png` and `<page>_math.png` the first table and displayed
formula up close, `trainer_trainer.png` the Trainer's signature, `search.png` the results). Exits 0 on success, 1 on a failed check, and 2
when Chromium or Playwright is missing (the pytest wrapper turns that into a skip).
"""
from __future__ import annotations
import functools, http.server, json, shutil, sys, threading
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SITE = ROOT / '_docs'
SHOTS = ROOT / 'build' / 'docs-screenshots'
WIDTH, HEIGHT = 1400, 900
# home; a tutorial with a table (display(Markdown(...))); a page of printed tables; the trainer's API; formulas
SHOT_PAGES = ('index.html', 'tutorials/flowrl_in_five_minutes.html', 'explanations/when_does_flowrl_match.html',
              'trainer.html', 'tutorials/reading_the_objective.html', 'seeds.html')  # seeds: issue 21's study module
DEFAULT_PAGES = SHOT_PAGES
CLOSE_UPS = {'trainer.html': ('trainer', '.output_markdown:has(#trainer)')}  # page: (name, a block to screenshot up close)
SEARCH = ('importance weight', 'objective.html#the-importance-weight')  # a query, and the section a top result must be
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


def shot_name(page: str) -> str: return page.replace('/', '__').replace('.html', '')


# What the page shows, measured in the page: table of contents, page links, formulas, overflow, sticky columns
JS_PAGE = '''() => {
  const q = s => [...document.querySelectorAll(s)];
  const wide = q('.content pre, .content table, .content .math.display')
    .filter(e => e.scrollWidth > e.clientWidth + 1)
    .map(e => ({tag: e.tagName.toLowerCase(), overflowX: getComputedStyle(e).overflowX}));
  return {
    title: (document.querySelector('h1.title') || {}).innerText || '',
    nav: q('nav.sidebar .nav a').length,
    headings: q('.content h2[id], .content h3[id]').map(h => h.id),
    toc: q('nav.toc a').map(a => decodeURIComponent(a.hash.slice(1))),
    prev: (document.querySelector('nav.page-nav a.prev') || {}).href || null,
    next: (document.querySelector('nav.page-nav a.next') || {}).href || null,
    math: q('span.math').length, typeset: q('span.math .katex').length, mathErrors: q('.katex-error').map(e => e.title || e.innerText),
    pageScroll: document.documentElement.scrollWidth - document.documentElement.clientWidth,
    wide: wide,
    figures: q('.plotly-graph-div').length, drawn: q('.plotly-graph-div').filter(d => d.querySelector('.main-svg')).length,
  };
}'''
JS_STICKY = '''() => {
  const r = s => { const e = document.querySelector(s); if (!e) return null; const b = e.getBoundingClientRect();
                   return {top: Math.round(b.top), bottom: Math.round(b.bottom), visible: b.bottom > 0 && b.top < innerHeight}; };
  return {scrollY: Math.round(scrollY), sidebar: r('nav.sidebar'), title: r('.site-title'), toc: r('nav.toc')};
}'''


def _check_page(page, name: str, order: list[str], problems: list, shots: Path | None) -> dict:
    "Checks of one loaded page (see the module docstring); screenshots when `shots` is given."
    if page.locator('.plotly-graph-div').count():  # plotly.js draws an SVG into every figure it rendered
        page.wait_for_function('[...document.querySelectorAll(".plotly-graph-div")].every(d => d.querySelector(".main-svg"))',
                               timeout=30000)
    m = page.evaluate(JS_PAGE)
    if not m['title'].strip(): problems.append(f'{name}: no page title')
    if m['nav'] < 3: problems.append(f'{name}: the sidebar has only {m["nav"]} links')
    if m['toc'] != m['headings']:
        problems.append(f'{name}: the table of contents lists {len(m["toc"])} sections, the page has {len(m["headings"])} h2/h3 '
                        f'headings (missing: {sorted(set(m["headings"]) - set(m["toc"]))[:5]})')
    i = order.index(name) if name in order else -1
    want_prev, want_next = (order[i - 1] if i > 0 else None), (order[i + 1] if 0 <= i < len(order) - 1 else None)
    for label, want, got in (('previous', want_prev, m['prev']), ('next', want_next, m['next'])):
        if (want is None) != (got is None) or (want and not got.split('?')[0].endswith('/' + want)):
            problems.append(f'{name}: the {label} link goes to {got}, expected {want} (sidebar order)')
    if m['typeset'] != m['math'] or m['mathErrors']:
        problems.append(f'{name}: {m["typeset"]} of {m["math"]} formulas typeset by KaTeX; errors: {m["mathErrors"][:3]}')
    if m['pageScroll'] > 0: problems.append(f'{name}: the page scrolls sideways by {m["pageScroll"]} px (something is wider than the window)')
    for w in m['wide']:
        if w['overflowX'] not in ('auto', 'scroll'):
            problems.append(f'{name}: a wide {w["tag"]} is cut off (overflow-x: {w["overflowX"]}) instead of scrolling in its box')
    if m['drawn'] < m['figures']: problems.append(f'{name}: {m["drawn"]} of {m["figures"]} figures drawn')
    if shots is not None:
        stem = shot_name(name)
        page.screenshot(path=str(shots / f'{stem}_top.png'))                 # what a reader sees first
        page.screenshot(path=str(shots / f'{stem}.png'), full_page=True)     # the whole page
        close = [CLOSE_UPS[name][::-1]] if name in CLOSE_UPS else []
        for sel, what in [('.content table', 'table'), ('.content .math.display', 'math'), *close]:  # the first of each, up close
            if page.locator(sel).count():
                page.locator(sel).first.scroll_into_view_if_needed()
                page.locator(sel).first.screenshot(path=str(shots / f'{stem}_{what}.png'))
        height = page.evaluate('document.documentElement.scrollHeight')
        page.evaluate(f'window.scrollTo(0, {height // 2})'); page.wait_for_timeout(150)
        page.screenshot(path=str(shots / f'{stem}_scrolled.png'))            # half-way down: sidebar and contents in view
        page.evaluate(f'window.scrollTo(0, {height})'); page.wait_for_timeout(150)
        page.screenshot(path=str(shots / f'{stem}_bottom.png'))              # the end: previous/next, sidebar still there
        s = page.evaluate(JS_STICKY)
        if s['scrollY'] > 0:  # a page taller than the window: the sidebar and the contents stay in view at its bottom
            if not (s['sidebar'] and s['sidebar']['top'] == 0 and s['title']['visible']):
                problems.append(f'{name}: scrolled to the bottom, the sidebar is not in view ({s})')
            if s['toc'] and m['toc'] and not s['toc']['visible']:
                problems.append(f'{name}: scrolled to the bottom, the table of contents is not in view ({s})')
        m['sticky'] = s
    return m


def check_search(page, base: str, problems: list, shots: Path | None, query: str = SEARCH[0], expect: str = SEARCH[1]) -> list[str]:
    "Type `query` into the search box of the home page; a result among the first three must link to `expect`. Returns the links."
    page.goto(base + 'index.html', wait_until='load')
    page.click('#search-input')
    page.keyboard.type(query, delay=20)
    try: page.wait_for_selector('#search-results a.search-hit', timeout=15000)
    except Exception:
        problems.append(f'search: typing {query!r} showed no results ({page.locator("#search-results").inner_text()[:200]!r})')
        return []
    hrefs = page.eval_on_selector_all('#search-results a.search-hit', 'as => as.map(a => a.href)')
    if shots is not None: page.screenshot(path=str(shots / 'search.png'))
    top = [h for h in hrefs[:3] if h.split('?')[0].endswith('/' + expect)]
    if not top: problems.append(f'search: {query!r}: no result among the first three links to {expect}: {hrefs[:5]}'); return hrefs
    link = page.locator('#search-results a.search-hit').nth(hrefs.index(top[0]))
    link.click(); page.wait_for_load_state('load')
    anchor = expect.partition('#')[2]
    if not page.url.endswith(expect) or page.locator(f'[id="{anchor}"]').count() != 1:
        problems.append(f'search: following the result for {query!r} led to {page.url}, not to a section {expect}')
    return hrefs


def check_pages(pages=DEFAULT_PAGES, site: Path = SITE, shots: Path = SHOTS, every_page: bool = True) -> list[str]:
    """Check `pages` with screenshots and, with `every_page`, every other page of the site without; then search, over
    http and from file://. Returns the problems found (empty when all is well)."""
    from playwright.sync_api import sync_playwright
    shots.mkdir(parents=True, exist_ok=True)
    sys.path.insert(0, str(ROOT / 'tools'))
    from docs import load_sidebar, notebooks, page_name, sidebar_pages
    nbs = ROOT / 'nbs'
    order = [page_name(p) for p in sidebar_pages(load_sidebar(nbs, notebooks(nbs)))]
    all_pages = sorted(json.loads((site / 'pages.json').read_text())) if every_page else []
    server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), functools.partial(_Quiet, directory=str(site)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    problems = []
    try:
        base = f'http://127.0.0.1:{server.server_address[1]}/'
        with sync_playwright() as pw:
            # scrollbars shown (Playwright hides them by default): a box that scrolls looks like one in the screenshots
            browser = pw.chromium.launch(executable_path=chromium(), args=CHROMIUM_ARGS, ignore_default_args=['--hide-scrollbars'])
            try:
                page = browser.new_page(viewport={'width': WIDTH, 'height': HEIGHT})
                errors = []
                page.on('pageerror', lambda e: errors.append(str(e)))
                page.on('response', lambda r: errors.append(f'HTTP {r.status}: {r.url}') if r.status >= 400 else None)
                for name in list(pages) + [p for p in all_pages if p not in pages]:
                    errors.clear()
                    resp = page.goto(base + name, wait_until='load')
                    if resp is None or resp.status != 200:
                        problems.append(f'{name}: HTTP {resp.status if resp else "no response"}'); continue
                    m = _check_page(page, name, order, problems, shots if name in pages else None)
                    if errors: problems.append(f'{name}: JavaScript errors: {errors}')
                    if name in pages:
                        print(f'{name}: title {m["title"]!r}, {m["nav"]} sidebar links, {len(m["toc"])} contents links, '
                              f'prev {m["prev"] and m["prev"].rsplit("/", 1)[-1]}, next {m["next"] and m["next"].rsplit("/", 1)[-1]}, '
                              f'{m["figures"]} figures ({m["drawn"]} drawn), {m["typeset"]}/{m["math"]} formulas typeset, '
                              f'{len(m["wide"])} wide boxes scrolling, at the bottom: {m.get("sticky")} '
                              f'-> {(shots / (shot_name(name) + "_top.png")).relative_to(ROOT)}')
                print(f'{len(all_pages) or len(pages)} pages checked')
                hits = check_search(page, base, problems, shots)
                print(f'search {SEARCH[0]!r} over http: {[h.rsplit("/", 1)[-1] for h in hits[:5]]} -> {(shots / "search.png").relative_to(ROOT)}')
                # the same from file:// (no server): the index is a script, so search works offline from the folder too
                page.goto((site / 'index.html').resolve().as_uri() + '?q=' + SEARCH[0].replace(' ', '+'), wait_until='load')
                try:
                    page.wait_for_selector('#search-results a.search-hit', timeout=15000)
                    print(f'search from file://: {page.locator("#search-results a.search-hit").count()} results')
                except Exception:
                    problems.append(f'search from file://: ?q={SEARCH[0]} showed no results')
                if errors: problems.append(f'search: JavaScript errors: {errors}')
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
