"""Generate README.md from nbs/index.ipynb offline (nbdev_readme needs Quarto, which these machines lack).

`python tools/make_readme.py` rewrites README.md; `--check` exits 1 if README.md is stale.
Cells marked `#| hide` are dropped and `#|` directive lines are stripped, as nbdev's own processing does.
"""
import copy, sys
from pathlib import Path
import nbformat
from nbconvert import MarkdownExporter

ROOT = Path(__file__).resolve().parents[1]
NB, README = ROOT / 'nbs' / 'index.ipynb', ROOT / 'README.md'
HEADER = '<!-- Generated from nbs/index.ipynb by tools/make_readme.py: edit the notebook, not this file. -->\n\n'


def render() -> str:
    nb = nbformat.read(NB, as_version=4)
    nb = copy.deepcopy(nb)
    cells = []
    for c in nb.cells:
        lines = c.source.splitlines()
        flags = [l for l in lines if l.startswith('#|')]
        if any(l.replace(' ', '') in ('#|hide', '#|hide_input') for l in flags): continue
        if c.cell_type == 'code': c.source = '\n'.join(l for l in lines if not l.startswith('#|')).strip()
        cells.append(c)
    nb.cells = cells
    body, _ = MarkdownExporter().from_notebook_node(nb)
    return HEADER + body.strip() + '\n'


if __name__ == '__main__':
    text = render()
    if '--check' in sys.argv:
        if not README.exists() or README.read_text(encoding='utf-8') != text:
            print('FAILED: README.md is stale: it differs from what nbs/index.ipynb generates.\n'
                  '  Fix: python tools/make_readme.py, then commit README.md.', file=sys.stderr)
            sys.exit(1)
    else:
        README.write_text(text, encoding='utf-8')
        print(f'wrote {README.relative_to(ROOT)}')
