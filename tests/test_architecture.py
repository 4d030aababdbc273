"""The shape of the package (issue 14), checked so it stays that way: no import cycle between its modules (counting the
lazy imports inside functions), module and notebook names agree, nothing exported by accident, no method attached by
assignment, and every export cell of a module notebook followed by an example that runs it."""
import ast, json, re
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / 'flowrl_nb'
MODULES = sorted(p.stem for p in PKG.glob('*.py') if not p.stem.startswith('_'))
NOTEBOOKS = sorted((ROOT / 'nbs').glob('[0-9]*.ipynb'))


def _imports(mod:str) -> set:
    "The flowrl_nb modules that `mod` imports anywhere in its file (top level or inside a function)."
    out = set()
    for node in ast.walk(ast.parse((PKG / f'{mod}.py').read_text())):
        if isinstance(node, ast.ImportFrom):
            name = node.module or ''
            if node.level == 1: name = 'flowrl_nb.' + name if name else 'flowrl_nb'
            if name == 'flowrl_nb': out.update(a.name for a in node.names if a.name in MODULES)
            elif name.startswith('flowrl_nb.'): out.add(name.split('.')[1])
        elif isinstance(node, ast.Import):
            out.update(a.name.split('.')[1] for a in node.names if a.name.startswith('flowrl_nb.'))
    return out - {mod}


def _cycle(graph:dict):
    "One import cycle as a list of modules, or None."
    state, stack = {}, []
    def visit(m):
        state[m] = 'open'; stack.append(m)
        for n in sorted(graph.get(m, ())):
            if state.get(n) == 'open': return stack[stack.index(n):] + [n]
            if n not in state and (c := visit(n)): return c
        state[m] = 'done'; stack.pop()
    for m in sorted(graph):
        if m not in state and (c := visit(m)): return c


def test_cycle_finder_finds_a_cycle():
    "The check below can fail: a planted cycle is found, a chain is not."
    assert _cycle({'a': {'b'}, 'b': {'c'}, 'c': {'a'}}) == ['a', 'b', 'c', 'a']
    assert _cycle({'a': {'b'}, 'b': {'c'}, 'c': set()}) is None


def test_no_import_cycle():
    "The modules import each other one way only, lazy imports included (the old metrics → model → tiny → metrics loop)."
    graph = {m: _imports(m) for m in MODULES}
    assert graph['tiny'] >= {'completions', 'coverage'} and 'tiny' not in graph['model']  # the parser sees real imports
    assert _cycle(graph) is None, f'import cycle: {" -> ".join(_cycle(graph))}'


def test_module_and_notebook_names_agree():
    "Each module comes from one notebook whose name (after its number) is the module's name."
    exp = {}
    for nb in NOTEBOOKS:
        src = ''.join(''.join(c['source']) for c in json.loads(nb.read_text())['cells'] if c['cell_type'] == 'code')
        m = re.search(r'^#\|\s*default_exp\s+(\w+)', src, re.M)
        if m: exp[nb.name] = m.group(1)
    for nb, mod in exp.items():
        assert re.sub(r'^\d+[a-z]?_', '', nb[:-len('.ipynb')]) == mod, f'{nb} exports flowrl_nb.{mod}'
    assert sorted(exp.values()) == MODULES, set(MODULES) ^ set(exp.values())


def test_no_methods_attached_by_assignment_and_no_accidental_exports():
    "Methods are defined in their class or with @patch (never `Class.x = f`), and no `__all__` holds a method name."
    method_names = set()
    for mod in MODULES:
        tree = ast.parse((PKG / f'{mod}.py').read_text())
        for node in tree.body:
            if isinstance(node, ast.Assign) and any(isinstance(t, ast.Attribute) for t in node.targets):
                pytest.fail(f'flowrl_nb/{mod}.py:{node.lineno} attaches a method by assignment: use @patch')
            if isinstance(node, ast.FunctionDef) and any(getattr(d, 'id', None) == 'patch' for d in node.decorator_list):
                method_names.add((mod, node.name))
    for mod in MODULES:
        ns = {}
        m = re.search(r'^__all__ = (\[.*?\])', (PKG / f'{mod}.py').read_text(), re.M | re.S)
        if not m: continue
        exported = set(ast.literal_eval(m.group(1)))
        assert not exported & {n for md, n in method_names if md == mod}, f'{mod}.__all__ exports patched methods'


def _kind(src:str) -> str:
    if re.search(r'^#\|\s*export', src, re.M): return 'export'
    if re.search(r'^#\|\s*hide', src, re.M) or 'default_exp' in src: return 'hide'
    return 'example'


def _classes(src:str) -> set:
    "The classes an export cell defines or patches (`class X`, `@patch def f(self:X)`)."
    return set(re.findall(r'^class (\w+)', src, re.M)) | set(re.findall(r'^@patch\s*\n(?:@.*\n)*def \w+\(self:\s*(\w+)', src, re.M))


def literate_gaps(nb:Path) -> list:
    """Export cells of `nb` with no example after them. A class built over several cells (its `class` cell, then
    `@patch` cells) is one unit: its example follows the unit's last cell, the first point where the class is whole."""
    cells = [''.join(c['source']) for c in json.loads(nb.read_text())['cells'] if c['cell_type'] == 'code']
    ks = [(_kind(s), s) for s in cells]
    gaps = []
    for j, (k, s) in enumerate(ks):
        if k != 'export': continue
        body = [l for l in s.splitlines() if l.strip() and not l.startswith('#')]
        if all(l.startswith(('from ', 'import ')) for l in body): continue  # the import cell
        nxt = next(((kk, ss) for kk, ss in ks[j + 1:] if kk != 'hide'), (None, ''))
        if nxt[0] == 'example': continue
        if nxt[0] == 'export' and _classes(s) & _classes(nxt[1]): continue  # the same class, continued
        name = next((l for l in s.splitlines() if l.startswith(('def ', 'class ', '@patch')) or re.match(r'^[A-Z_]+ =', l)), body[0])
        gaps.append(f'{nb.name}: {name.strip()}')
    return gaps


def test_literate_gap_finder_can_fail(tmp_path):
    "A notebook with an export cell directly followed by another is reported; one with examples is not."
    cell = lambda s: {'cell_type': 'code', 'source': s, 'metadata': {}, 'outputs': [], 'execution_count': None}
    nb = tmp_path / '01_x.ipynb'
    nb.write_text(json.dumps({'cells': [cell('#| export\ndef f(): pass'), cell('#| export\ndef g(): pass'), cell('g()')]}))
    assert literate_gaps(nb) == ['01_x.ipynb: def f(): pass']
    nb.write_text(json.dumps({'cells': [cell('#| export\nclass A: pass'), cell('#| export\n@patch\ndef f(self:A): pass'), cell('A().f()')]}))
    assert literate_gaps(nb) == []


def test_every_export_cell_has_an_example():
    "Every export cell of every module notebook is followed by an example (or test) that runs it."
    gaps = [g for nb in NOTEBOOKS for g in literate_gaps(nb)]
    assert not gaps, f'{len(gaps)} export cells without an example after them:\n' + '\n'.join(gaps)
