r"""Check the built docs site (`_docs/`, from `make docs`): `python tools/check_docs.py`. Exits 1 with a list of problems.

* every notebook has a page, and is in a section of the sidebar (nbs/sidebar.yml);
* every public name in each module's `__all__` is on its notebook's page: a function or class with its show_doc block
  (heading, signature with every parameter, and each parameter's docment); any other name (a constant) at least by name;
* every tutorial page shows the Plotly figures saved in its notebook (and each tutorial has at least one);
* no page shows a raw error traceback;
* every internal link, image, script and stylesheet resolves, including `#anchors`;
* what a Quarto site has: a search index covering every page (and finding "importance weight" in the objective's
  section on it), an on-page table of contents listing each h2/h3, previous/next links in sidebar order;
* what a reader should not see: a path of the machine that built the site (a virtualenv, site-packages, a pytest temp
  folder), a printed Markdown table left as monospace text, a descriptive subscript set in italics (`\pi_{ref}`:
  write `\pi_{\mathrm{ref}}`), a `NoneType=None` in any signature (the builder shows an unannotated `x=None` as written), or a private
  parameter in a public signature.
"""
from __future__ import annotations
import argparse, ast, functools, importlib, inspect, json, re, sys
from pathlib import Path
from urllib.parse import unquote, urlsplit

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / 'tools'))
from docs import ASSETS, SEARCH_INDEX, _PLOTLY_MIME, _TABLE_RULE, load_sidebar, notebooks, page_name, sidebar_pages  # noqa: E402

# a path of the machine that built the site, shown in an output or a warning
LOCAL_PATH = re.compile(r'/\.venv/|site-packages/|/tmp/pytest-|pytest-of-')
# a subscript of several letters in italics, as TeX sets `\pi_{ref}` (the product r·e·f) or `\pi_ref` (π_r, then ef)
ITALIC_SUBSCRIPT = re.compile(r'(?<!\\)_(\{\s*[A-Za-z]{2,}\s*\}|[A-Za-z]{2,})')  # (`\_` is an underscore)
SEARCH_CHECK = ('importance weight', 'objective.html#the-importance-weight')  # a query, and a section that must hold it


@functools.lru_cache(None)
def _soup(path: Path):
    "The parsed page at `path`, parsed once per run (the checks only read it)."
    from bs4 import BeautifulSoup
    return BeautifulSoup(path.read_text(encoding='utf-8'), 'html.parser')


def _norm(s: str) -> str: return re.sub(r'\s+', ' ', s).strip()


def module_pages(lib: Path, nbs_rel_from_lib: str = '../nbs/') -> dict[str, tuple[str, list[str]]]:
    "module name -> (page of its notebook, names in its __all__)."
    out = {}
    for py in sorted(lib.glob('*.py')):
        if py.name.startswith('_'): continue
        src = py.read_text(encoding='utf-8')
        m = re.search(r'File to edit: (\S+?\.ipynb)', src)
        if not m: continue
        names = []
        for node in ast.parse(src).body:
            if isinstance(node, ast.Assign) and any(getattr(t, 'id', None) == '__all__' for t in node.targets):
                names = list(ast.literal_eval(node.value))
        nb = m.group(1)[len(nbs_rel_from_lib):] if m.group(1).startswith(nbs_rel_from_lib) else m.group(1)
        out[f'{lib.name}.{py.stem}'] = (page_name(nb), names)
    return out


def _showdoc_block(soup, name: str):
    "The show_doc heading of `name` and the text of the output it belongs to (signature code + docstring)."
    for box in soup.select('.output_markdown'):
        for h in box.find_all(re.compile(r'^h[1-6]$')):
            if h.get_text().replace('#', '').strip() == name: return h, box.get_text('')
    return None, ''


def check_api(site: Path, problems: list, lib: Path) -> int:
    "Every public symbol on its page with signature and parameter docs. Returns the number of symbols checked."
    from fastcore.docments import docments
    modidx = importlib.import_module(f'{lib.name}._modidx').d['syms']
    n = 0
    for mod_name, (page, names) in module_pages(lib).items():
        if not (site / page).exists():
            problems.append(f'API: {mod_name}: its page {page} does not exist'); continue
        soup = _soup(site / page)
        text = soup.get_text(' ')
        mod = importlib.import_module(mod_name)
        for name in names:
            n += 1
            key = f'{mod_name}.{name}'
            if key not in modidx.get(mod_name, {}):  # not a def/class: a constant or alias, shown by name
                if not re.search(rf'(?<![\w.]){re.escape(name)}(?!\w)', text):
                    problems.append(f'API: {key} (a constant) is not mentioned on {page}: name it in the notebook\'s prose')
                continue
            target = modidx[mod_name][key][0]
            tpage, _, anchor = target.partition('#')
            tsoup = _soup(site / tpage) if (site / tpage).exists() else None
            h, block = _showdoc_block(tsoup, name) if tsoup is not None else (None, '')
            if h is None:
                problems.append(f'API: {key} has no show_doc heading on {tpage} '
                                '(its show_doc cell is missing: is the cell `#| export` and not hidden?)'); continue
            if not re.search(rf'\b(def|class)\s+{re.escape(name)}\b', block):
                problems.append(f'API: {key}: the show_doc block on {tpage} has no signature `def/class {name}`')
            obj = getattr(mod, name)
            try: params = [p for p in inspect.signature(obj).parameters if p not in ('self', 'cls')]
            except (TypeError, ValueError): params = []
            for p in params:
                if p.startswith('_'):
                    problems.append(f'API: {key}: its public signature has the private parameter `{p}` (on {tpage}); '
                                    'keep internals out of the signature')
                if not re.search(rf'(?<![\w.]){re.escape(p)}(?!\w)', block):
                    problems.append(f'API: {key}: parameter `{p}` is missing from its signature on {tpage}')
            try: docs = docments(obj, full=True)
            except Exception: docs = {}
            nblock = _norm(block)
            for p, d in (docs or {}).items():
                doc = (d or {}).get('docment') if isinstance(d, dict) else None
                if p != 'return' and doc and _norm(doc) not in nblock:
                    problems.append(f'API: {key}: the doc of parameter `{p}` ({doc!r}) is missing on {tpage}')
    return n


def check_pages(site: Path, nbs: Path, problems: list) -> list[str]:
    files = notebooks(nbs)
    in_sidebar = set(sidebar_pages(load_sidebar(nbs, files)))
    for rel in files:
        if not (site / page_name(rel)).exists(): problems.append(f'page: nbs/{rel} has no page ({page_name(rel)})')
        if rel not in in_sidebar:
            problems.append(f'sidebar: nbs/{rel} is in no section of nbs/sidebar.yml (add it, or name it to match a pattern)')
    for rel in sorted(in_sidebar - set(files)):
        problems.append(f'sidebar: nbs/sidebar.yml lists {rel}, which does not exist')
    return files


def check_tutorials(site: Path, nbs: Path, files: list[str], problems: list) -> int:
    import nbformat
    total = 0
    for rel in files:
        if not rel.startswith('tutorials/'): continue
        nb = nbformat.read(nbs / rel, as_version=4)
        saved = sum(1 for c in nb.cells if c.cell_type == 'code' for o in c.get('outputs', [])
                    if _PLOTLY_MIME in o.get('data', {}) or 'plotly-graph-div' in str(o.get('data', {}).get('text/html', '')))
        page = site / page_name(rel)
        if not page.exists(): continue
        shown = len(_soup(page).select('.plotly-graph-div'))
        total += shown
        if saved == 0:
            problems.append(f'tutorial: nbs/{rel} has no saved Plotly figure: run `python tools/run_tutorials.py {"nbs/" + rel}` '
                            'and commit it with its outputs')
        elif shown < saved:
            problems.append(f'tutorial: {page_name(rel)} shows {shown} of the {saved} figures saved in nbs/{rel}')
    return total


def check_html(site: Path, problems: list) -> int:
    "No tracebacks; every internal link resolves. Returns the number of internal links checked."
    pages = sorted(p for p in site.rglob('*.html'))
    ids = {p.resolve(): {t['id'] for t in _soup(p).find_all(id=True)} for p in pages}
    n = 0
    for p in pages:
        s = _soup(p)
        rel = p.relative_to(site).as_posix()
        text = s.get_text(' ')
        if 'Traceback (most recent call last)' in text or s.select('.output_error'):
            problems.append(f'traceback: {rel} shows a raw error traceback (an output of a failed cell)')
        for tag, attr in (('a', 'href'), ('img', 'src'), ('script', 'src'), ('link', 'href')):
            for el in s.find_all(tag, **{attr: True}):
                url = el[attr]
                parts = urlsplit(url)
                if parts.scheme or url.startswith('//') or url.startswith('mailto:'): continue
                n += 1
                target = (p.parent / unquote(parts.path)).resolve() if parts.path else p.resolve()
                if parts.path and not target.exists():
                    problems.append(f'link: {rel}: {url} → no such file'); continue
                if parts.fragment and target in ids and unquote(parts.fragment) not in ids[target]:
                    problems.append(f'link: {rel}: {url} → no element with id "{unquote(parts.fragment)}"')
    return n


def check_reader_view(site: Path, nbs: Path, files: list[str], problems: list) -> dict:
    "Search index, table of contents, previous/next, and what a reader should not see (see the module docstring)."
    order = [page_name(p) for p in sidebar_pages(load_sidebar(nbs, files))]
    pages = sorted(p.relative_to(site).as_posix() for p in site.rglob('*.html'))
    # the search index: a script defining window.SEARCH_DOCS, a section list covering every page
    idx_path, docs = site / ASSETS / SEARCH_INDEX, []
    if not idx_path.is_file(): problems.append(f'search: {idx_path} does not exist')
    else:
        text = idx_path.read_text(encoding='utf-8')
        m = re.fullmatch(r'window\.SEARCH_DOCS = (.*);\s*', text, re.DOTALL)
        try: docs = json.loads(m.group(1)) if m else []
        except ValueError: docs = []
        if not docs: problems.append(f'search: {idx_path} holds no search documents (window.SEARCH_DOCS = [...])')
        missing = sorted(set(pages) - {d['url'].partition('#')[0] for d in docs}) if docs else []
        if missing: problems.append(f'search: {len(missing)} page(s) are not in the search index: {missing[:5]}')
        q, want = SEARCH_CHECK
        hits = [d['url'] for d in docs if all(w in (d['heading'] + ' ' + d['text']).lower() for w in q.split())]
        if docs and want not in hits: problems.append(f'search: the index has no section {want} with the words {q!r} ({hits[:5]})')
    ntoc = 0
    for rel in pages:
        s = _soup(site / rel)
        content = s.select_one('main.content')
        if content is None: problems.append(f'page: {rel} has no main.content'); continue
        heads = [h['id'] for h in content.find_all(['h2', 'h3'], id=True)]
        toc = [unquote(a['href'][1:]) for a in s.select('nav.toc a[href^="#"]')]
        ntoc += len(toc)
        if toc != heads:
            problems.append(f'toc: {rel}: the table of contents lists {len(toc)} sections, the page has {len(heads)} h2/h3 headings')
        if rel in order:
            i = order.index(rel)
            for cls, j in (('prev', i - 1), ('next', i + 1)):
                a = s.select_one(f'nav.page-nav a.{cls}')
                want = order[j] if 0 <= j < len(order) else None
                got = (p.parent if (p := (site / rel)) else site) and (a and (site / rel).parent.joinpath(unquote(a['href'])).resolve())
                if (want is None) != (a is None) or (want and got != (site / want).resolve()):
                    problems.append(f'page-nav: {rel}: the {cls} link is {a and a["href"]}, expected {want} (sidebar order)')
        text = content.get_text(' ')
        for m in LOCAL_PATH.finditer(text):
            problems.append(f'local path: {rel} shows a path of the machine that built it: ...{text[max(0, m.start() - 80):m.end() + 40]!r}...')
            break
        for pre in content.select('.output_text pre, .output_stream pre'):
            lines = pre.get_text().splitlines()
            if any(l.strip().startswith('|') and _TABLE_RULE.match(lines[i + 1]) for i, l in enumerate(lines[:-1])):
                problems.append(f'table: {rel} shows a printed Markdown table as monospace text'); break
        for span in content.select('span.math'):
            if m := ITALIC_SUBSCRIPT.search(span.get_text()):
                problems.append(f'math: {rel}: {span.get_text()[:80]!r} sets the subscript {m.group(1)!r} in italics '
                                '(write \\mathrm{...}, as in \\pi_{\\mathrm{ref}})')
        for box in content.select('.output_markdown'):  # no signature shows an unannotated `x=None` as `x:NoneType=None`
            if box.find(re.compile(r'^h[1-6]$')) and box.find('pre') and 'NoneType' in box.find('pre').get_text():
                problems.append(f'signature: {rel}: {box.find(re.compile(r"^h[1-6]$")).get_text().strip("#")} shows a '
                                'parameter as NoneType=None: annotate it (e.g. `x:list|None=None`)')
    return dict(search_docs=len(docs), toc_links=ntoc)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description='Check the built docs site.')
    ap.add_argument('--site', default=str(ROOT / '_docs'))
    a = ap.parse_args(argv)
    site, nbs, lib = Path(a.site), ROOT / 'nbs', ROOT / 'flowrl_nb'
    if not (site / 'index.html').exists():
        print(f'FAILED: {site}/index.html does not exist: build the site first (make docs)', file=sys.stderr); return 1
    problems: list[str] = []
    files = check_pages(site, nbs, problems)
    nsym = check_api(site, problems, lib)
    nfig = check_tutorials(site, nbs, files, problems)
    nlinks = check_html(site, problems)
    rv = check_reader_view(site, nbs, files, problems)
    print(f'[check_docs] {len(files)} notebooks, {nsym} public names, {nfig} tutorial figures, {nlinks} internal links, '
          f'{rv["search_docs"]} search sections, {rv["toc_links"]} contents links checked')
    for p in problems: print('FAILED:', p, file=sys.stderr)
    if problems: print(f'[check_docs] {len(problems)} problem(s)', file=sys.stderr)
    return 1 if problems else 0


if __name__ == '__main__':
    sys.exit(main())
