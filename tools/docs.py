"""Build the documentation site offline, without Quarto: `python tools/docs.py` (or `make docs`) → `_docs/`.

Where Quarto is installed, `nbdev_docs` publishes the site from the same sources (`nbs/_quarto.yml`, `nbs/nbdev.yml`,
`nbs/sidebar.yml`). These machines cannot install Quarto, so this script does the two halves of `nbdev_docs` itself:

1. nbdev's own notebook processing into `_proc/`, as `nbdev.serve.proc_nbs` does it (same files, cache and
   per-notebook driver, `nbdev.serve_drv` with nbdev's `FilterDefaults`): frontmatter from the title cell, hidden and
   exported cells removed, a `show_doc` cell (signature + parameter docs) added after every exported definition and
   executed, backticked names linked to their API pages. Unlike `proc_nbs` it reports every notebook that fails, not
   just the first;
2. a static renderer: each processed notebook → one HTML page with nbconvert's HTML exporter, the sidebar of
   `nbs/sidebar.yml`, Quarto's page names (`02_objective.ipynb` → `objective.html`) and heading anchors, Plotly figures
   drawn by a local copy of plotly.js, and what a Quarto site has: full-text search (MiniSearch, over an index built
   here), an on-page table of contents, previous/next links in sidebar order, and LaTeX typeset by KaTeX. show_doc
   blocks are rendered again from the installed package, where dataclasses and NamedTuples keep their field docs;
   Markdown tables a cell printed become HTML tables. The site works offline, from a local server or from file://.

The two front-end libraries (KaTeX, MiniSearch) are npm packages pinned by tools/site/package-lock.json; tools/venv.sh
installs them into .venv/site/ (`npm ci`) and this script copies them into the site's assets: the build itself needs
no network.

    python tools/docs.py            # build _docs/ (reuses _proc/ for notebooks that did not change)
    python tools/docs.py --force    # reprocess every notebook
    python tools/check_docs.py      # then check it (tests/test_docs.py runs both)
"""
from __future__ import annotations
import argparse, fnmatch, html, json, os, re, shutil, sys, time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ASSETS = 'assets'
# npm packages the site uses (tools/site/package-lock.json), installed by tools/venv.sh; FLOWRL_NB_SITE_LIBS overrides
SITE_LIBS = ROOT / '.venv' / 'site' / 'node_modules'
SEARCH_INDEX = 'search-index.js'  # assets/search-index.js: `window.SEARCH_DOCS = [...]` (a script, so file:// works too)


# ---------------------------------------------------------------- names, nav and config

def page_name(rel) -> str:
    "Quarto/nbdev output path of a notebook path relative to nbs/: number prefix dropped, lower case, .html."
    rel = Path(rel)
    return rel.with_name(re.sub(r'^\d+[a-zA-Z0-9]*_', '', rel.name.lower())).with_suffix('.html').as_posix()


def pandoc_id(text: str) -> str:
    "The identifier pandoc (so Quarto) gives a heading: lower case, punctuation but `_-.` dropped, spaces → `-`."
    s = re.sub(r'[^\w\s.\-]', '', text.strip().lower())
    s = re.sub(r'\s+', '-', s)
    s = re.sub(r'^[^a-z]+', '', s)
    return s or 'section'


def notebooks(nbs: Path) -> list[str]:
    "Every notebook nbdev documents (the rules of nbdev's nbglob: files and folders starting with _ or . skipped)."
    out = []
    for p in sorted(nbs.rglob('*.ipynb')):
        rel = p.relative_to(nbs)
        if any(part.startswith(('_', '.')) for part in rel.parts): continue
        out.append(rel.as_posix())
    return out


def _glob(pattern: str, files: list[str]) -> list[str]:
    "Quarto's sidebar globs: a leading / anchors the pattern at nbs/ (not recursive); otherwise it matches in any folder."
    if pattern.startswith('/'):
        pat = pattern[1:]
        return [f for f in files if f.count('/') == pat.count('/') and fnmatch.fnmatch(f, pat)]
    return [f for f in files if fnmatch.fnmatch(f, pattern) or fnmatch.fnmatch(f, '*/' + pattern)]


def load_sidebar(nbs: Path, files: list[str]) -> list:
    "Sidebar entries from nbs/sidebar.yml: ('page', path) and ('section', title, [entries])."
    import yaml
    y = yaml.safe_load((nbs / 'sidebar.yml').read_text(encoding='utf-8'))
    def conv(items):
        if isinstance(items, str): return [('page', f) for f in _glob(items, files)]
        out = []
        for it in items:
            if isinstance(it, str):
                out += [('page', f) for f in _glob(it, files)] if any(c in it for c in '*?[') else [('page', it)]
            elif 'section' in it: out.append(('section', it['section'], conv(it.get('contents', []))))
            elif 'href' in it: out.append(('page', it['href'], it.get('text')))
        return out
    sb = y['website']['sidebar']
    if isinstance(sb, list): sb = sb[0]
    return conv(sb.get('contents', []))


def sidebar_pages(entries) -> list[str]:
    out = []
    for e in entries:
        if e[0] == 'page': out.append(e[1])
        else: out += sidebar_pages(e[2])
    return out


# ---------------------------------------------------------------- notebook → HTML

_DIRECTIVE = re.compile(r'^\s*#\|\s*([\w-]+)\s*:?\s*(.*?)\s*$')
_PLOTLY_MIME = 'application/vnd.plotly.v1+json'
_WIDGET_MIME = 'application/vnd.jupyter.widget-view+json'


def is_progress_widget(output: dict) -> bool:
    "A saved tqdm.notebook bar: a widget whose text fallback is a bar ('40%|...'). tools/run_tutorials.py drops them too."
    data = output.get('data', {})
    return _WIDGET_MIME in data and bool(re.search(r'\d+%\|', ''.join(data.get('text/plain', ''))))


def _directives(src: str):
    "Quarto/nbdev cell directives (`#| key: value`) and the source without them."
    d, keep = {}, []
    for line in src.splitlines():
        m = _DIRECTIVE.match(line)
        if m: d[m.group(1)] = m.group(2).lower()
        else: keep.append(line)
    return d, '\n'.join(keep).strip('\n')


def _frontmatter(nb) -> dict:
    import yaml
    for i, c in enumerate(nb.cells):
        if c.cell_type == 'raw' and c.source.lstrip().startswith('---'):
            fm = yaml.safe_load(c.source.strip().strip('-')) or {}
            del nb.cells[i]
            return fm
    return {}


def _plotly_html(fig: dict, n: int) -> str:
    layout = dict(fig.get('layout', {}))
    layout.pop('width', None)  # fit the page's column (a fixed width wider than it would be cut off)
    height = layout.get('height', 450)
    dump = lambda o: json.dumps(o, separators=(',', ':')).replace('</', '<\\/')
    cfg = {'responsive': True, **fig.get('config', {})}
    return (f'<div class="plotly-graph-div" id="plotly-fig-{n}" style="height:{height}px; width:100%;"></div>\n'
            f'<script>Plotly.newPlot("plotly-fig-{n}", {dump(fig.get("data", []))}, {dump(layout)}, {dump(cfg)});</script>')


_SHOWDOC = re.compile(r'^show_doc\(\s*([\w.]+)\s*\)\s*$')


class Symbols:
    "The package's documented objects by the name show_doc was called with, per page (from nbdev's _modidx)."
    def __init__(self, lib: str):
        import importlib
        self.lib, self.idx = lib, importlib.import_module(f'{lib}._modidx').d['syms']

    def find(self, page: str, name: str):
        import importlib
        for mod, syms in self.idx.items():
            key = f'{mod}.{name}'
            if key in syms and syms[key][0].partition('#')[0] == page:
                try:
                    obj = importlib.import_module(mod)
                    for part in name.split('.'): obj = getattr(obj, part)
                    return obj
                except Exception: return None  # keep the output the docs kernel produced
        return None


def _namedtuple_signature(cls) -> str | None:
    "show_doc renders a NamedTuple as `(*args, **kwargs)`: its fields with their comments, in show_doc's format."
    import ast, inspect, io, tokenize
    from fastcore.docments import _fmt_sig
    if not (isinstance(cls, type) and issubclass(cls, tuple) and hasattr(cls, '_fields')): return None
    try: src, first = inspect.getsourcelines(cls)
    except (OSError, TypeError): return None
    src = ''.join(src)
    comments = {t.start[0]: t.string.lstrip('#').strip()
                for t in tokenize.generate_tokens(io.StringIO(src).readline) if t.type == tokenize.COMMENT}
    params = []
    for node in ast.parse(src).body[0].body:
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            fmt = f'{node.target.id}:{ast.unparse(node.annotation)}' + (f'={ast.unparse(node.value)}' if node.value else '')
            params.append((fmt, comments.get(node.end_lineno, '')))
    return _fmt_sig(cls.__name__, params, '):', 110, prefix='class'), first


def _showdoc_markdown(obj) -> str:
    "show_doc's markdown for the installed object, with nbdev's links added as its docs processing does."
    from nbdev.showdoc import BasicMarkdownRenderer
    from nbdev.doclinks import NbdevLookup
    md = BasicMarkdownRenderer(obj)._repr_markdown_()
    nt = _namedtuple_signature(obj)
    if nt: md = re.sub(r'```python\n.*?```', lambda m: f'```python\n{nt[0]}\n```', md, count=1, flags=re.DOTALL)
    # fastcore infers an unannotated `x=None`'s type from its default and prints `x:NoneType=None`, which no reader wrote
    # and which reads as "x must be None": show the parameter as it is written
    md = re.sub(r'```python\n.*?```', lambda m: m.group(0).replace(':NoneType=None', '=None'), md, count=1, flags=re.DOTALL)
    if '#LNone)' in md:  # nbdev could not find the line of the definition: ask inspect
        import inspect
        try: md = md.replace('#LNone)', f'#L{inspect.getsourcelines(inspect.unwrap(obj))[1]})')
        except (OSError, TypeError): md = md.replace('#LNone)', ')')
    nl = NbdevLookup()
    return ''.join(nl.link_line(l) for l in md.splitlines(keepends=True))


def _unlink_code(md: str) -> str:
    "nbdev links backticked names on every line of show_doc's output, also inside its code block: undo that there."
    parts = re.split(r'(```.*?```)', md, flags=re.DOTALL)
    return ''.join(re.sub(r'\[(`[^`]+`)\]\([^)]*\)', r'\1', p) if p.startswith('```') else p for p in parts)


_TABLE_RULE = re.compile(r'^\s*\|?(\s*:?-{3,}:?\s*\|)+\s*(:?-{3,}:?\s*)?$')


def split_printed_tables(text: str) -> list[tuple[str, str]]:
    """A printed text cut into ('text', ...) and ('table', ...) parts: a Markdown table is a `| a | b |` line, a rule
    line (`|---|---|`) and the `|` lines after it. Cells that `print()` a Markdown table show it as an HTML table."""
    lines, parts, i = text.splitlines(keepends=True), [], 0
    row = lambda l: l.strip().startswith('|') and l.strip().endswith('|') and len(l.strip()) > 1
    buf = []
    while i < len(lines):
        if row(lines[i]) and i + 1 < len(lines) and _TABLE_RULE.match(lines[i + 1]) and lines[i + 1].strip().startswith('|'):
            if buf: parts.append(('text', ''.join(buf))); buf = []
            j = i + 2
            while j < len(lines) and row(lines[j]): j += 1
            parts.append(('table', ''.join(lines[i:j]))); i = j
        else:
            buf.append(lines[i]); i += 1
    if buf: parts.append(('text', ''.join(buf)))
    return parts


def _split_table_outputs(o: dict, stats: dict) -> list[dict]:
    "A stdout stream output holding printed Markdown tables → stream parts and Markdown outputs (rendered as tables)."
    if o.get('output_type') != 'stream' or o.get('name') != 'stdout': return [o]
    text = ''.join(o['text']) if isinstance(o.get('text'), list) else o.get('text', '')
    parts = split_printed_tables(text)
    if not any(kind == 'table' for kind, _ in parts): return [o]
    import nbformat
    out = []
    for kind, s in parts:
        if kind == 'text':
            if s.strip(): out.append(nbformat.v4.new_output('stream', name='stdout', text=s))
        else:
            stats['tables'] += 1
            out.append(nbformat.v4.new_output('display_data', data={'text/markdown': s, 'text/plain': s}))
    return out


def prepare(nb, stats: dict, page: str = '', symbols: Symbols | None = None):
    """Apply the Quarto cell options nbdev emits and make outputs renderable offline. Returns the number of figures.
    show_doc outputs are rendered again from the installed package: in the docs kernel a dataclass or NamedTuple is
    defined by a notebook cell, has no source, and loses its field docs (the installed object has them)."""
    nfig = 0
    cells = []
    for c in nb.cells:
        if c.cell_type == 'markdown':  # Quarto fenced divs (`::: {.callout-note}`): keep the content, drop the fences
            c.source = '\n'.join(l for l in c.source.splitlines() if not l.strip().startswith(':::'))
            cells.append(c); continue
        if c.cell_type != 'code': continue  # raw cells are for Quarto only
        d, c.source = _directives(c.source)
        if d.get('include') == 'false': continue
        m = _SHOWDOC.match(c.source.strip())
        obj = symbols.find(page, m.group(1)) if (m and symbols is not None) else None
        if obj is not None:
            for o in c.get('outputs', []):
                if 'text/markdown' in o.get('data', {}):
                    o['data']['text/markdown'] = _showdoc_markdown(obj); stats['showdoc'] += 1
        tags = set(c.metadata.get('tags', []))
        if d.get('echo') == 'false' or not c.source.strip(): tags.add('remove_input')
        if d.get('output') == 'false': c.outputs = []
        outs = []
        for o in [p for o in c.get('outputs', []) for p in _split_table_outputs(o, stats)]:
            data = o.get('data', {})
            if _PLOTLY_MIME in data:
                o['data'] = {'text/html': _plotly_html(data[_PLOTLY_MIME], stats['figures'] + nfig)}; nfig += 1
            elif 'text/html' in data and 'cdn.plot.ly' in data['text/html'] and 'plotly-graph-div' not in data['text/html']:
                continue  # plotly.js loader printed by the notebook renderer: the page loads a local copy instead
            elif is_progress_widget(o):
                continue  # a tqdm progress bar (a widget in Jupyter): nothing to show on a static page
            elif _WIDGET_MIME in data and 'image/png' not in data:
                o['data'] = {'text/html': '<div class="widget-note">An interactive widget was here: it runs in '
                                          'Jupyter, not on this static page.</div>'}
            if 'text/markdown' in data:  # show_doc's "[source](url){target=...}": pandoc attributes → HTML
                md = data['text/markdown']
                md = ''.join(md) if isinstance(md, list) else md
                data['text/markdown'] = _unlink_code(re.sub(r'\[source\]\(([^)]+)\)\{[^}]*\}',
                                                            r'<a class="source-link" href="\1">source</a>', md))
            outs.append(o)
        if c.get('outputs') is not None: c.outputs = outs
        if tags: c.metadata['tags'] = sorted(tags)
        if 'remove_input' in tags and not c.get('outputs'): continue
        cells.append(c)
    nb.cells = cells
    nb.metadata.pop('widgets', None)
    stats['figures'] += nfig
    return nfig


def _exporter():
    from nbconvert import HTMLExporter
    from traitlets.config import Config
    c = Config()
    c.TagRemovePreprocessor.enabled = True
    c.TagRemovePreprocessor.remove_input_tags = {'remove_input'}
    return HTMLExporter(config=c, template_name='basic', exclude_input_prompt=True, exclude_output_prompt=True)


_MATH_BLOCK = re.compile(r'\$\$(.+?)\$\$', re.DOTALL)
_MATH_INLINE = re.compile(r'(?<![\\$\w])\$(?=\S)([^$\n]+?)(?<=\S)\$(?![\w$])')


def _math_span(tex: str, block: bool) -> str:
    "A LaTeX span as pandoc (so Quarto) marks it: `<span class=\"math inline|display\">TeX</span>`, typeset by KaTeX in the page."
    return f'<span class="math {"display" if block else "inline"}">{html.escape(tex.strip(), quote=False)}</span>'


def _convert_math(soup, stats: dict):
    "LaTeX in text (`$...$`, `$$...$$`) → math spans that site.js typesets with KaTeX (offline: a local copy)."
    from bs4 import NavigableString, BeautifulSoup
    for node in list(soup.find_all(string=re.compile(r'\$'))):
        if node.find_parent(['code', 'pre', 'script', 'style']) or type(node) is not NavigableString: continue
        if any('math' in (p.get('class') or []) for p in node.parents): continue
        text = html.escape(str(node), quote=False)
        spans = []  # placeholders, so the inline pattern never looks inside a display span
        def keep(tex, block):
            spans.append(_math_span(html.unescape(tex), block)); return f'\x00{len(spans) - 1}\x01'
        new = _MATH_BLOCK.sub(lambda m: keep(m.group(1), True), text)
        new = _MATH_INLINE.sub(lambda m: keep(m.group(1), False), new)
        if spans:
            stats['math'] += len(spans)
            new = re.sub('\x00(\\d+)\x01', lambda m: spans[int(m.group(1))], new)
            node.replace_with(BeautifulSoup(new, 'html.parser'))


def render_body(nb, stats: dict):
    "HTML body of one processed notebook, as a BeautifulSoup fragment with pandoc heading ids."
    from bs4 import BeautifulSoup
    body, _ = _exporter().from_notebook_node(nb)
    soup = BeautifulSoup(body, 'html.parser')
    for s in soup.find_all('script', type='application/vnd.jupyter.widget-state+json'): s.decompose()
    seen = {}
    for h in soup.find_all(['h1', 'h2', 'h3', 'h4', 'h5', 'h6']):
        for a in h.find_all('a', class_='anchor-link'): a.decompose()
        hid = pandoc_id(h.get_text())
        if hid in seen: seen[hid] += 1; hid = f'{hid}-{seen[hid]}'
        else: seen[hid] = 0
        h['id'] = hid
        a = soup.new_tag('a', href='#' + hid, attrs={'class': 'anchor-link', 'aria-label': 'link to this section'})
        a.string = '#'
        h.append(a)
    _convert_math(soup, stats)
    return soup


def rel_link(target: str, page: str) -> str:
    "Relative URL from `page` (a site path) to `target` (a site path, may carry #anchor)."
    path, _, anchor = target.partition('#')
    rel = os.path.relpath(path, os.path.dirname(page) or '.') if path else ''
    return rel + ('#' + anchor if anchor else '')


def fix_links(soup, page: str, src: str, ids: dict, site_url: str, stats: dict):
    """Make links site-relative: absolute links to this site (as nbdev writes them, and as the README needs them)
    and links to notebooks become relative page links; images on this site become relative too.
    A link to a name with no heading on its page (a private helper nbdev linked) is unwrapped to plain code."""
    for img in soup.find_all('img', src=True):
        if site_url and img['src'].startswith(site_url + '/'): img['src'] = rel_link(img['src'][len(site_url) + 1:], page)
    for a in soup.find_all('a', href=True):
        href = a['href']
        if site_url and href.startswith(site_url + '/'):
            target = href[len(site_url) + 1:]
        elif not re.match(r'^[a-z][a-z0-9+.-]*:', href) and not href.startswith('#') and '.ipynb' in href:
            path, _, anchor = href.partition('#')
            nb_rel = os.path.normpath(os.path.join(os.path.dirname(src), path))
            target = page_name(nb_rel) + ('#' + anchor if anchor else '')
        else: continue
        tpath, _, anchor = target.partition('#')
        if anchor and tpath in ids and anchor not in ids[tpath]:
            stats['unlinked'].append(f'{page}: {a.get_text()} → {target}')
            a.unwrap(); continue
        a['href'] = rel_link(target, page)


# ---------------------------------------------------------------- the page shell

def nav_html(entries, titles: dict, page: str) -> str:
    def items(es):
        out = []
        for e in es:
            if e[0] == 'page':
                p = page_name(e[1])
                label = (e[2] if len(e) > 2 and e[2] else None) or titles.get(e[1], e[1])
                cls = ' class="active" aria-current="page"' if p == page else ''
                out.append(f'<li><a{cls} href="{html.escape(rel_link(p, page))}">{html.escape(label)}</a></li>')
            else:
                out.append(f'<li class="section"><span class="section-title">{html.escape(e[1])}</span><ul>{items(e[2])}</ul></li>')
        return ''.join(out)
    return f'<ul class="nav">{items(entries)}</ul>'


def toc_html(soup) -> str:
    "The on-page table of contents: the page's h2 and h3 headings (as Quarto's `toc: true`), h3 nested under its h2."
    items, open_sub = [], False
    for h in soup.find_all(['h2', 'h3']):
        if not h.get('id'): continue
        label = html.escape(_heading_text(h))
        if h.name == 'h3' and items:
            if not open_sub: items[-1] = items[-1][:-len('</li>')] + '<ul>'; open_sub = True
            items.append(f'<li><a href="#{h["id"]}">{label}</a></li>')
        else:
            if open_sub: items.append('</ul></li>'); open_sub = False
            items.append(f'<li><a href="#{h["id"]}">{label}</a></li>')
    if open_sub: items.append('</ul></li>')
    return f'<ul>{"".join(items)}</ul>' if items else ''


def _heading_text(h) -> str:
    "A heading's text without its `#` anchor link."
    return re.sub(r'\s+', ' ', ''.join(str(s) for s in h.find_all(string=True) if not s.find_parent('a', class_='anchor-link'))).strip()


def page_nav_html(order: list[str], labels: dict, page: str) -> str:
    "Previous/next links at the bottom of a page, in sidebar order."
    if page not in order: return ''
    i = order.index(page)
    def link(j, cls, word):
        if not 0 <= j < len(order): return f'<span class="{cls}"></span>'
        return (f'<a class="{cls}" rel="{cls}" href="{html.escape(rel_link(order[j], page))}"><span class="page-nav-word">{word}</span>'
                f'<span class="page-nav-title">{html.escape(labels[order[j]])}</span></a>')
    return f'<nav class="page-nav" aria-label="previous and next page">{link(i - 1, "prev", "← Previous")}{link(i + 1, "next", "Next →")}</nav>'


_SECTION = ('h2', 'h3', 'h4')
_BLOCKS = ['p', 'li', 'td', 'th', 'div', 'pre', 'dt', 'dd', 'blockquote', 'h5', 'h6', 'tr', 'table', 'ul', 'ol']


def search_docs(soup, page: str, title: str, desc: str = '') -> list[dict]:
    """The page cut into search documents, one per section (the text up to the next h2-h4 heading): page, anchor,
    title, heading and text (prose, code and outputs; not scripts, figures or TeX)."""
    from bs4 import NavigableString, Tag
    docs = [dict(url=page, title=title, heading='', text=[desc] if desc else [])]
    started = set()  # the blocks whose text has begun
    skip = lambda n: n.find_parent(['script', 'style', 'h1', *_SECTION]) or n.find_parent(class_=['plotly-graph-div', 'math', 'anchor-link'])
    for node in soup.descendants:
        if isinstance(node, Tag) and node.name in _SECTION and node.get('id'):
            docs.append(dict(url=f'{page}#{node["id"]}', title=title, heading=_heading_text(node), text=[]))
        elif isinstance(node, NavigableString) and type(node) is NavigableString and str(node) and not skip(node):
            block = node.find_parent(_BLOCKS)  # a space where a block (paragraph, table cell, ...) begins, not inside a line
            first = block is not None and id(block) not in started
            if first: started.add(id(block))
            docs[-1]['text'].append((' ' if first else '') + str(node))
    out = []
    for d in docs:
        d['text'] = re.sub(r'\s+', ' ', ''.join(d['text'])).strip()
        if d['text'] or d['heading']: out.append(d)
    return out


SHELL = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title} – {site}</title>
<meta name="description" content="{desc_attr}">
<link rel="stylesheet" href="{rel}{assets}/site.css">
{head}</head>
<body data-root="{rel}">
<nav class="sidebar" aria-label="site">
<a class="site-title" href="{home}">{site}</a>
<div class="search" role="search"><input id="search-input" type="search" placeholder="Search (press /)" aria-label="Search the documentation" autocomplete="off" spellcheck="false"></div>
<div id="search-results" class="search-results" hidden></div>
{nav}
</nav>
<main class="content">
<header class="page-header"><h1 class="title">{title}</h1>{desc}</header>
{body}
{page_nav}
<footer class="page-footer">Built from <code>nbs/{src}</code> by <code>tools/docs.py</code> (nbdev notebook processing, static render).
<a href="{git_url}">Source on GitHub</a></footer>
</main>
<nav class="toc" aria-label="on this page">{toc}</nav>
{scripts}</body>
</html>
"""

CSS = """
:root { --fg:#1f2328; --muted:#59636e; --line:#d1d9e0; --accent:#0b5cad; --bg2:#f6f8fa; --mark:#fff2a8; }
* { box-sizing: border-box; }
html { scroll-padding-top: 16px; }
body { margin:0; display:flex; align-items:flex-start; font:16px/1.55 system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif; color:var(--fg); }
a { color:var(--accent); text-decoration:none; } a:hover { text-decoration:underline; }
/* the sidebar and the table of contents stay in view while the page scrolls */
.sidebar { flex:0 0 250px; position:sticky; top:0; height:100vh; overflow-y:auto; padding:20px 16px; background:var(--bg2);
           border-right:1px solid var(--line); font-size:14.5px; scrollbar-width:thin; }
.site-title { display:block; font-weight:700; font-size:20px; margin-bottom:12px; color:var(--fg); }
.search input { width:100%; padding:7px 10px; border:1px solid var(--line); border-radius:6px; font:inherit; background:#fff; }
.search input:focus { outline:2px solid #9cc3ef; border-color:var(--accent); }
.search-results { position:fixed; z-index:20; left:258px; top:12px; width:min(720px, calc(100vw - 290px)); max-height:calc(100vh - 24px);
                  overflow-y:auto; background:#fff; border:1px solid var(--line); border-radius:8px; box-shadow:0 8px 28px rgba(0,0,0,.18);
                  padding:6px; font-size:14.5px; }
.search-note { padding:6px 10px; color:var(--muted); font-size:13px; }
.search-hit { display:block; padding:8px 10px; border-radius:6px; color:var(--fg); }
.search-hit:hover, .search-hit:focus { background:#eef4fb; text-decoration:none; outline:none; }
.hit-title { display:block; font-weight:600; color:var(--accent); } .hit-sep { color:var(--muted); font-weight:400; }
.hit-text { display:block; color:var(--muted); font-size:13.5px; margin-top:2px; } .hit-text mark { background:var(--mark); color:var(--fg); }
.nav, .nav ul { list-style:none; margin:0; padding:0; } .nav { margin-top:12px; } .nav ul { margin:2px 0 10px 0; }
.nav li a { display:block; padding:3px 8px; border-radius:6px; color:var(--fg); }
.nav li a.active { background:#dde9f7; font-weight:600; }
.section-title { display:block; margin-top:12px; padding:3px 8px; font-weight:700; color:var(--muted); text-transform:uppercase;
                 font-size:12px; letter-spacing:.05em; }
.content { flex:1 1 auto; min-width:0; max-width:980px; padding:28px 32px 60px; }
.toc { flex:0 0 215px; position:sticky; top:0; max-height:100vh; overflow-y:auto; padding:30px 16px 30px 4px; font-size:13.5px; scrollbar-width:thin; }
.toc:empty { visibility:hidden; }
.toc::before { content:"On this page"; display:block; font-weight:700; color:var(--muted); text-transform:uppercase; font-size:12px;
               letter-spacing:.05em; margin:0 0 8px 10px; }
.toc ul { list-style:none; margin:0; padding:0; } .toc ul ul { padding-left:12px; }
.toc a { display:block; padding:2px 10px; color:var(--muted); border-left:2px solid transparent; line-height:1.35; margin:1px 0; }
.toc a.current { color:var(--accent); border-left-color:var(--accent); }
.page-header .title { font-size:34px; margin:0 0 6px; } .description { color:var(--muted); font-size:18px; margin:0 0 24px; }
h2 { margin-top:34px; padding-bottom:4px; border-bottom:1px solid var(--line); } h3 { margin-top:26px; }
.anchor-link { visibility:hidden; margin-left:6px; color:var(--muted); font-weight:400; }
h1:hover .anchor-link, h2:hover .anchor-link, h3:hover .anchor-link, h4:hover .anchor-link { visibility:visible; }
/* wide code, outputs, tables and formulas scroll inside their box instead of being cut off */
pre { background:var(--bg2); border:1px solid var(--line); border-radius:6px; padding:10px 12px; overflow-x:auto;
      font-size:13px; line-height:1.45; scrollbar-width:thin; }
code { font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace; font-size:.9em; }
p code, li code, td code { background:var(--bg2); padding:1px 4px; border-radius:4px; }
table { border-collapse:collapse; margin:12px 0; font-size:14.5px; display:block; max-width:100%; width:max-content; overflow-x:auto; scrollbar-width:thin; }
th, td { border:1px solid var(--line); padding:5px 10px; vertical-align:top; } th { background:var(--bg2); text-align:left; }
td { font-variant-numeric:tabular-nums; } .output_markdown td:first-child { white-space:nowrap; }
.cell { margin:10px 0; } .input_area pre { margin:0; }
.output_area pre { background:#fff; border-left:3px solid var(--line); border-radius:0; border-top:0; border-right:0;
                   border-bottom:0; }
.output_stderr pre { background:#fff5f5; }
.output_markdown > hr { border:0; border-top:2px solid var(--line); margin:30px 0 4px; }
.source-link { float:right; font-size:13px; }
.widget-note { padding:8px 12px; border:1px dashed var(--line); color:var(--muted); border-radius:6px; }
img { max-width:100%; }
.math.display { display:block; overflow-x:auto; overflow-y:hidden; margin:12px 0; scrollbar-width:thin; }
.katex { font-size:1.08em; } .katex-display { margin:0; padding:4px 0; }
.plotly-graph-div { margin:8px 0 18px; }
.page-nav { display:flex; justify-content:space-between; gap:16px; margin-top:48px; }
.page-nav a { flex:0 1 48%; display:block; padding:10px 14px; border:1px solid var(--line); border-radius:8px; }
.page-nav a:hover { border-color:var(--accent); text-decoration:none; }
.page-nav .next { text-align:right; margin-left:auto; }
.page-nav-word { display:block; font-size:13px; color:var(--muted); } .page-nav-title { display:block; font-weight:600; }
.page-footer { margin-top:28px; padding-top:12px; border-top:1px solid var(--line); color:var(--muted); font-size:13px; }
@media (max-width: 1200px) { .toc { display:none; } }
@media (max-width: 900px) { body { display:block; } .sidebar { position:static; height:auto; } .content { padding:20px; }
                            .search-results { left:8px; width:calc(100vw - 16px); } }
"""


def _css() -> str:
    from pygments.formatters import HtmlFormatter
    return CSS + HtmlFormatter(style='default').get_style_defs('.highlight')


# ---------------------------------------------------------------- the build

def site_libs() -> Path:
    "The installed front-end libraries (KaTeX, MiniSearch); a clear error when tools/venv.sh has not installed them."
    d = Path(os.environ.get('FLOWRL_NB_SITE_LIBS') or SITE_LIBS)
    for need in ('katex/dist/katex.min.js', 'katex/dist/katex.min.css', 'minisearch/dist/umd/index.js'):
        if not (d / need).is_file():
            raise FileNotFoundError(f"the docs site's front-end libraries are not installed ({d / need} is missing): run "
                                    "`bash tools/venv.sh`, which installs tools/site/package-lock.json with npm into .venv/site "
                                    "(no npm? `apt-get install npm`)")
    return d


def copy_site_assets(dest: Path, libs: Path):
    "KaTeX (script, stylesheet, woff2 fonts), MiniSearch and the page script into the site's assets, with their licences."
    (dest / 'katex' / 'fonts').mkdir(parents=True, exist_ok=True)
    for f in ('katex.min.js', 'katex.min.css'): shutil.copy(libs / 'katex' / 'dist' / f, dest / 'katex' / f)
    for f in (libs / 'katex' / 'dist' / 'fonts').glob('*.woff2'): shutil.copy(f, dest / 'katex' / 'fonts' / f.name)
    shutil.copy(libs / 'katex' / 'LICENSE', dest / 'katex' / 'LICENSE.txt')
    shutil.copy(libs / 'minisearch' / 'dist' / 'umd' / 'index.js', dest / 'minisearch.js')
    shutil.copy(libs / 'minisearch' / 'LICENSE.txt', dest / 'minisearch-LICENSE.txt')
    shutil.copy(ROOT / 'tools' / 'site' / 'site.js', dest / 'site.js')


def sidebar_labels(entries, titles: dict) -> dict:
    "page path -> the label the sidebar shows for it (its `text:` in sidebar.yml, else the notebook's title)."
    out = {}
    for e in entries:
        if e[0] == 'page': out[page_name(e[1])] = (e[2] if len(e) > 2 and e[2] else None) or titles.get(e[1], e[1])
        else: out.update(sidebar_labels(e[2], titles))
    return out


def _error_text(e: BaseException) -> str:
    "The processing error and the error it was raised from (read from the worker's traceback text)."
    msg = str(e).strip()
    tb = str(e.__cause__ or '')  # concurrent.futures attaches the worker's formatted traceback as the cause
    causes = re.findall(r'^(\w+(?:Error|Exception)\b.*)$', tb.split('The above exception was the direct cause')[0], re.M)
    return msg + (f'\n  -> {causes[-1]}' if causes else '')


def process(force: bool = False, n_workers: int = 2) -> tuple[Path, dict]:
    """nbdev's notebook processing into _proc/, as `nbdev.serve.proc_nbs` does it (same file selection, cache and
    per-notebook driver, in spawned workers), except that one failing notebook does not hide the others: returns
    the cache folder and {notebook: error}. Needs the package installed (`pip install -e .`)."""
    from concurrent.futures import ProcessPoolExecutor
    from multiprocessing import get_context
    from nbdev.config import get_config
    from nbdev.doclinks import nbglob
    from nbdev.serve import _proc_file
    import nbdev.serve, nbdev.serve_drv
    os.environ.setdefault('HF_HUB_OFFLINE', '1')
    os.environ.setdefault('TOKENIZERS_PARALLELISM', 'false')
    cfg = get_config()
    cache, path = cfg.config_path / '_proc', Path(cfg.nbs_path)
    files = nbglob(path, func=Path, file_glob='', file_re='')
    for extra in ('_quarto.yml', '_brand.yml'):
        if (path / extra).exists(): files.append(path / extra)
    chk_mtime = max(cfg.config_file.stat().st_mtime, Path(nbdev.serve.__file__).stat().st_mtime)
    cache.mkdir(parents=True, exist_ok=True)
    cache_mtime = cache.stat().st_mtime
    if force or cache_mtime < chk_mtime:
        shutil.rmtree(cache); cache.mkdir()
    jobs = [j for j in (_proc_file(f, cache=cache, path=path, mtime=cache_mtime) for f in files) if j]
    errors = {}
    if jobs:
        with ProcessPoolExecutor(max(1, min(n_workers, len(jobs))), mp_context=get_context('spawn')) as ex:
            futures = [(job, ex.submit(nbdev.serve_drv.main, job)) for job in jobs]
            for job, fut in futures:
                if fut.exception() is not None:
                    errors[Path(job[0]).relative_to(path).as_posix()] = _error_text(fut.exception())
                    Path(job[1]).unlink(missing_ok=True)  # never render a stale copy of a notebook that failed
    cache.touch()
    return cache, errors


def build(force: bool = False, n_workers: int = 2, proc: bool = True, out: Path | None = None) -> dict:
    "Build the static site into `out` (default: settings.ini's doc_path, `_docs`). Returns build statistics."
    import nbformat
    from nbdev.config import get_config
    os.chdir(ROOT)
    cfg = get_config()
    nbs, out = Path(cfg.nbs_path), Path(out or cfg.doc_path)
    site_url = f"{cfg.doc_host}{cfg.doc_baseurl}".rstrip('/')
    libs = site_libs()  # before the slow part: a missing install fails in a second
    t0 = time.perf_counter()
    cache, errors = process(force, n_workers) if proc else (ROOT / '_proc', {})
    t_proc = time.perf_counter() - t0
    files = notebooks(nbs)
    entries = load_sidebar(nbs, files)
    symbols = Symbols(cfg.lib_name)
    stats = dict(errors=errors, showdoc=0, figures=0, math=0, tables=0, unlinked=[], pages=[])

    pages = {}   # page path -> (src rel, soup, frontmatter, has figures)
    for rel in files:
        p = cache / rel
        if not p.exists():
            errors.setdefault(rel, f'{p} is missing: nbdev processing did not produce it'); continue
        nb = nbformat.read(p, as_version=4)
        fm = _frontmatter(nb)
        nfig = prepare(nb, stats, page_name(rel), symbols)
        pages[page_name(rel)] = (rel, render_body(nb, stats), fm, nfig)
    ids = {pg: {t['id'] for t in soup.find_all(id=True)} for pg, (_, soup, _, _) in pages.items()}
    titles = {rel: str(fm.get('title') or Path(rel).stem) for pg, (rel, _, fm, _) in pages.items()}

    tmp = out.with_name(out.name + '.tmp')
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / ASSETS).mkdir(parents=True)
    (tmp / ASSETS / 'site.css').write_text(_css(), encoding='utf-8')
    copy_site_assets(tmp / ASSETS, libs)
    order = [page_name(p) for p in sidebar_pages(entries) if page_name(p) in pages]
    labels = sidebar_labels(entries, titles)
    index = []
    if stats['figures']:
        import plotly
        shutil.copy(Path(plotly.__file__).parent / 'package_data' / 'plotly.min.js', tmp / ASSETS / 'plotly.min.js')
    for f in cache.rglob('*'):  # images and other files the notebooks refer to
        relf = f.relative_to(cache)
        if f.is_file() and f.suffix not in ('.ipynb', '.yml', '.yaml') and not any(s.startswith('.') for s in relf.parts):
            (tmp / relf).parent.mkdir(parents=True, exist_ok=True); shutil.copy(f, tmp / relf)
    for pg, (rel, soup, fm, nfig) in pages.items():
        fix_links(soup, pg, rel, ids, site_url, stats)
        rel_root = os.path.relpath('.', os.path.dirname(pg) or '.')
        rel_root = '' if rel_root == '.' else rel_root + '/'
        desc = str(fm.get('description') or '')
        desc_html = re.sub(r'`([^`]+)`', r'<code>\1</code>', html.escape(desc))  # the description's code spans, as Quarto shows them
        head = f'<script src="{rel_root}{ASSETS}/plotly.min.js"></script>\n' if nfig else ''
        has_math = soup.find(class_='math') is not None
        if has_math: head += f'<link rel="stylesheet" href="{rel_root}{ASSETS}/katex/katex.min.css">\n'
        scripts = (f'<script src="{rel_root}{ASSETS}/katex/katex.min.js"></script>\n' if has_math else '') + \
                  f'<script src="{rel_root}{ASSETS}/site.js"></script>\n'
        index += search_docs(soup, pg, titles[rel], desc)
        text = SHELL.format(title=html.escape(titles[rel]), site=html.escape(cfg.title), desc_attr=html.escape(desc.replace('`', '')),
                            rel=rel_root, assets=ASSETS, head=head, home=rel_link('index.html', pg),
                            nav=nav_html(entries, titles, pg), body=str(soup), src=rel, git_url=cfg.git_url,
                            desc=f'<p class="description">{desc_html}</p>' if desc else '', toc=toc_html(soup),
                            page_nav=page_nav_html(order, labels, pg), scripts=scripts)
        (tmp / pg).parent.mkdir(parents=True, exist_ok=True)
        (tmp / pg).write_text(text, encoding='utf-8')
        stats['pages'].append(pg)
    rank = {pg: i for i, pg in enumerate(order)}  # the index in sidebar order, each section an id
    index.sort(key=lambda d: rank.get(d['url'].partition('#')[0], len(rank)))
    for i, d in enumerate(index): d['id'] = i
    (tmp / ASSETS / SEARCH_INDEX).write_text('window.SEARCH_DOCS = ' + json.dumps(index, ensure_ascii=False, separators=(',', ':'))
                                             .replace('</', '<\\/') + ';\n', encoding='utf-8')
    stats['search_docs'] = len(index)
    (tmp / 'pages.json').write_text(json.dumps({pg: v[0] for pg, v in pages.items()}, indent=1), encoding='utf-8')
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    stats.update(out=str(out), seconds_proc=round(t_proc, 1), seconds=round(time.perf_counter() - t0, 1),
                 in_sidebar=sidebar_pages(entries))
    return stats


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--force', action='store_true', help='reprocess every notebook (ignore the _proc/ cache)')
    ap.add_argument('--no-proc', action='store_true', help='reuse _proc/ as it is (skip nbdev processing)')
    ap.add_argument('--workers', type=int, default=2, help='processes for nbdev processing (default 2)')
    a = ap.parse_args(argv)
    try:
        s = build(force=a.force, n_workers=a.workers, proc=not a.no_proc)
    except Exception as e:
        print(f'FAILED: docs build: {type(e).__name__}: {e}', file=sys.stderr)
        if e.__cause__ is not None: print(f'  caused by {type(e.__cause__).__name__}: {e.__cause__}', file=sys.stderr)
        return 1
    print(f"[docs] {len(s['pages'])} pages, {s['figures']} figures, {s['math']} math spans, {s['tables']} printed tables, "
          f"{s['search_docs']} search sections -> {s['out']}/ "
          f"in {s['seconds']} s (nbdev processing {s['seconds_proc']} s)")
    if s['unlinked']: print(f"[docs] {len(s['unlinked'])} link(s) to names without documentation were left as plain code")
    for nb, err in s['errors'].items():
        print(f'FAILED: nbdev docs processing of nbs/{nb} (it has no page):\n  ' + err.replace('\n', '\n  '), file=sys.stderr)
    if s['errors']:
        print('  Cells with an import are executed by the docs processing whatever their flags: keep imports in the '
              'import cells at the top (see PLATFORM.md).', file=sys.stderr)
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(main())
