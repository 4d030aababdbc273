"""Check the built docs site (`_docs/`, from `make docs`): `python tools/check_docs.py`. Exits 1 with a list of problems.

* every notebook has a page, and is in a section of the sidebar (nbs/sidebar.yml);
* every public name in each module's `__all__` is on its notebook's page: a function or class with its show_doc block
  (heading, signature with every parameter, and each parameter's docment); any other name (a constant) at least by name;
* every tutorial page shows the Plotly figures saved in its notebook (and each tutorial has at least one);
* no page shows a raw error traceback;
* every internal link, image, script and stylesheet resolves, including `#anchors`.
"""
from __future__ import annotations
import argparse, ast, functools, importlib, inspect, json, re, sys
from pathlib import Path
from urllib.parse import unquote, urlsplit

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / 'tools'))
from docs import _PLOTLY_MIME, load_sidebar, notebooks, page_name, sidebar_pages  # noqa: E402


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
    print(f'[check_docs] {len(files)} notebooks, {nsym} public names, {nfig} tutorial figures, {nlinks} internal links checked')
    for p in problems: print('FAILED:', p, file=sys.stderr)
    if problems: print(f'[check_docs] {len(problems)} problem(s)', file=sys.stderr)
    return 1 if problems else 0


if __name__ == '__main__':
    sys.exit(main())
