"""The docs site builds offline (`make docs`: tools/docs.py), passes tools/check_docs.py, and works in a browser.

Building runs nbdev's docs processing over every notebook (each in a fresh process that imports the package), so
this is one of the slower tests (about a minute and a half on two busy cores). The browser test opens every page in
Chromium at 1,400 px (table of contents, previous/next, formulas typeset, nothing cut off, sidebar in view when scrolled),
searches, and saves screenshots to build/docs-screenshots/; it is skipped, with the reason, only when Chromium or
Playwright is not installed. The small tests at the top check the builder's and the checker's pieces without a build.
"""
import json, os, re, subprocess, sys
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / 'tools'))


def _run(*args, timeout=1800):
    env = {**os.environ, 'HF_HUB_OFFLINE': '1', 'TOKENIZERS_PARALLELISM': 'false'}
    return subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=env)


def test_printed_markdown_tables_become_tables():
    "A cell that prints text, a Markdown table and more text shows the table as a table, the text around it as text."
    import docs
    out = {'output_type': 'stream', 'name': 'stdout',
           'text': 'effective modes at matched V\n| run | V = 0.3 |\n|---|---|\n| flowrl | 24.36 |\n| grpo | 11.82 |\n\nKL below\n'}
    stats = {'tables': 0}
    parts = docs._split_table_outputs(out, stats)
    assert [p['output_type'] for p in parts] == ['stream', 'display_data', 'stream'] and stats['tables'] == 1
    assert parts[1]['data']['text/markdown'].splitlines() == ['| run | V = 0.3 |', '|---|---|', '| flowrl | 24.36 |', '| grpo | 11.82 |']
    assert parts[0]['text'] == 'effective modes at matched V\n' and parts[2]['text'].strip() == 'KL below'
    plain = {'output_type': 'stream', 'name': 'stdout', 'text': 'a | b\nno table | here\n'}
    assert docs._split_table_outputs(plain, stats) == [plain]


def test_toc_page_nav_and_search_sections():
    "The contents list each h2 with its h3 nested, previous/next follow the given order, search cuts a page at h2-h4."
    import docs
    from bs4 import BeautifulSoup
    soup = BeautifulSoup('<p>intro <span class="math inline">x^2</span></p><h2 id="a">A<a class="anchor-link" href="#a">#</a></h2><p>alpha text</p>'
                         '<h3 id="a1">A one</h3><p>beta <code>code</code>word</p><h2 id="b">B</h2><table><tr><td>c1</td>'
                         '<td>c2</td></tr></table>', 'html.parser')
    toc = BeautifulSoup(docs.toc_html(soup), 'html.parser')
    assert [a['href'] for a in toc.find_all('a')] == ['#a', '#a1', '#b'] and toc.find('a').get_text() == 'A'
    assert toc.select_one('li > ul > li > a')['href'] == '#a1'  # the h3 inside its h2's item
    nav = BeautifulSoup(docs.page_nav_html(['index.html', 'tutorials/t.html', 'core.html'], {'index.html': 'Home',
                        'tutorials/t.html': 'T', 'core.html': 'Core'}, 'tutorials/t.html'), 'html.parser')
    assert nav.select_one('a.prev')['href'] == '../index.html' and nav.select_one('a.next')['href'] == '../core.html'
    secs = docs.search_docs(soup, 'p.html', 'Page', 'the description')
    assert [(d['url'], d['heading']) for d in secs] == [('p.html', ''), ('p.html#a', 'A'), ('p.html#a1', 'A one'), ('p.html#b', 'B')]
    assert secs[2]['text'] == 'beta codeword' and secs[3]['text'] == 'c1 c2' and secs[0]['text'] == 'the description intro'


def test_checks_see_what_a_reader_should_not():
    "The checker's patterns: italic multi-letter subscripts and machine paths are caught, their fixes pass."
    import check_docs as cd
    assert cd.ITALIC_SUBSCRIPT.search(r'\pi_{ref}(y)') and cd.ITALIC_SUBSCRIPT.search(r'\bar{lp}_ref')
    assert not cd.ITALIC_SUBSCRIPT.search(r'\pi_{\mathrm{ref}}(y) \sum_t m_t \hat r_i \mathrm{mean}_g \texttt{tis\_cap}')
    assert cd.LOCAL_PATH.search('/work/main/.venv/lib/python3.11/site-packages/IPython/core/x.py:3: UserWarning')
    assert cd.LOCAL_PATH.search("run_dir='/tmp/pytest-of-root/pytest-49/test_x0/run'")
    assert not cd.LOCAL_PATH.search("each command fills the clone's own .venv; .venv/bin/python bench/plan_memory.py")


@pytest.fixture(scope='module')
def build():
    "Build the site once for this module; the result of `python tools/docs.py`."
    return _run('tools/docs.py')


def test_docs_build_and_check(build):
    assert build.returncode == 0, f'the docs build failed:\n{build.stdout[-3000:]}\n{build.stderr[-8000:]}'
    r = _run('tools/check_docs.py', '--site', str(ROOT / '_docs'))
    assert r.returncode == 0, f'the docs site has problems:\n{r.stdout[-2000:]}\n{r.stderr[-8000:]}'
    assert not re.search(r'(?<!\d)0 tutorial figures', r.stdout), r.stdout  # (not '10 tutorial figures')
    assert not re.search(r'(?<!\d)0 (search sections|contents links)', r.stdout), r.stdout
    assert not re.search(r'(?<!\d)0 printed tables', build.stdout), build.stdout  # the explanation prints tables
    assert json.loads((ROOT / '_docs' / 'pages.json').read_text()), 'no pages'


def test_docs_in_browser(build):
    """Every page in Chromium at 1,400 px, search from the box (over http and file://), and the screenshots a person
    looks at: home, a tutorial with a table, printed tables, the trainer's API, formulas, search results."""
    import docs_browser
    why = docs_browser.missing()
    if why: pytest.skip(f'browser check of the docs skipped: {why}')
    assert (ROOT / '_docs' / 'index.html').exists(), f'no site was built:\n{build.stderr[-4000:]}'
    problems = docs_browser.check_pages()
    assert not problems, '\n'.join(problems)
    for page in docs_browser.SHOT_PAGES:
        for suffix in ('', '_top', '_scrolled', '_bottom'):
            shot = docs_browser.SHOTS / f'{docs_browser.shot_name(page)}{suffix}.png'
            assert shot.exists() and shot.stat().st_size > 10_000, shot
    assert (docs_browser.SHOTS / 'search.png').stat().st_size > 10_000
