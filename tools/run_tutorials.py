"""Execute notebooks in place so the outputs committed with them (plots, printed numbers) are current.

    python tools/run_tutorials.py                       # every tutorial in nbs/tutorials/
    python tools/run_tutorials.py --modules             # every module notebook (nbs/NN_*.ipynb)
    python tools/run_tutorials.py nbs/tutorials/03_reading_the_objective.ipynb
    python tools/run_tutorials.py --clean-outputs nbs/*.ipynb nbs/tutorials/*.ipynb   # filter saved outputs, run nothing

Tutorials and module notebooks are committed WITH outputs: the docs site shows what is saved in them (nbdev's docs
processing does not run them), so each function's page shows what its example printed. Progress bars and third-party
deprecation warnings on stderr are dropped from the saved outputs (they say nothing about the function and change
on every run); every other output, flowrl_nb's own warnings included, is kept. Cells flagged `#| gpu` run only when CUDA is available; otherwise they are skipped and their outputs
cleared, so a saved output is always one that this machine produced. Afterwards `nbdev_clean` normalises the files,
exactly as tools/test.sh expects.
"""
import re, subprocess, sys, time
from pathlib import Path
import nbformat
from nbclient import NotebookClient
from docs import is_progress_widget  # tools/docs.py, beside this script

ROOT = Path(__file__).resolve().parents[1]
_GPU = re.compile(r'^\s*#\|\s*gpu\s*$', re.MULTILINE)
_NO_EVAL = re.compile(r'^\s*#\|\s*eval:\s*false\s*$', re.MULTILINE)  # nbdev: never executed (e.g. rebuilding the tiny model)
_BAR = re.compile(r'\d+%\|[^|]*\|')  # a tqdm bar: "40%|████      | 2/5"


_LIB_WARNING = re.compile(r'site-packages/.*:\d+: (Future|Deprecation|PendingDeprecation)Warning')
_BNB_NOTICE = 'Failed to load CPU gemm_4bit_forward from kernels-community'  # bitsandbytes' import notice (flowrl_nb.core drops it)


def _drop_noise(cell):
    """Remove progress bars (on stderr, and tqdm's notebook widgets), third-party deprecation warnings (with the source line Python prints under each) and
    bitsandbytes' optional-kernel notice from a cell's stderr; everything else on stderr is kept."""
    outs = []
    for o in cell.get('outputs', []):
        if is_progress_widget(o):
            continue  # a tqdm.notebook bar: without the widget state it would show as a frozen "0%" line
        if o.get('output_type') == 'stream' and o.get('name') == 'stderr':
            keep, skip_next = [], False
            for l in re.split(r'[\r\n]', o['text']):
                if skip_next and l.startswith(' '): skip_next = False; continue
                skip_next = bool(_LIB_WARNING.search(l))
                if skip_next or _BAR.search(l) or l.startswith(_BNB_NOTICE) or not l.strip(): continue
                keep.append(l)
            if not keep: continue
            o['text'] = '\n'.join(keep) + '\n'
        outs.append(o)
    cell['outputs'] = outs


def _has_cuda() -> bool:
    try:
        import torch
        return torch.cuda.is_available()
    except Exception: return False


def run(path: Path, timeout: int = 3600) -> float:
    "Execute `path` in place (skipping `#| gpu` cells without CUDA) and return the seconds it took."
    nb = nbformat.read(path, as_version=4)
    cuda = _has_cuda()
    skipped = 0
    for cell in nb.cells:
        tags = cell.metadata.setdefault('tags', [])
        if cell.cell_type == 'code' and _NO_EVAL.search(cell.source):
            if 'skip-execution' not in tags: tags.append('skip-execution')
            cell.outputs, cell.execution_count = [], None
        elif cell.cell_type == 'code' and _GPU.search(cell.source) and not cuda:
            if 'skip-execution' not in tags: tags.append('skip-execution')
            cell.outputs, cell.execution_count = [], None
            skipped += 1
    t0 = time.perf_counter()
    NotebookClient(nb, timeout=timeout, kernel_name='python3', resources={'metadata': {'path': str(path.parent)}}).execute()
    took = time.perf_counter() - t0
    # Widget state (nbclient saves it) would embed each live figure's JavaScript bundle, megabytes per widget: the
    # committed notebook keeps the widgets' outputs, and the docs show a screenshot of the live dashboard instead.
    nb.metadata.pop('widgets', None)
    for cell in nb.cells:
        if cell.cell_type == 'code': _drop_noise(cell)  # drop the helper tag again: the committed notebook carries only nbdev's own flags
        tags = cell.metadata.get('tags')
        if tags is not None:
            if 'skip-execution' in tags: tags.remove('skip-execution')
            if not tags: del cell.metadata['tags']
    nbformat.write(nb, path)
    subprocess.run([str(Path(sys.executable).parent / 'nbdev_clean'), '--fname', str(path)], cwd=ROOT, check=True)
    print(f'{path.relative_to(ROOT)}: {took:.1f} s' + (f' ({skipped} #| gpu cell(s) skipped: no CUDA)' if skipped else ''))
    return took


def clean_outputs(path: Path) -> None:
    "Apply the same output filter to a notebook's saved outputs without executing it."
    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == 'code': _drop_noise(cell)
    nbformat.write(nb, path)
    subprocess.run([str(Path(sys.executable).parent / 'nbdev_clean'), '--fname', str(path)], cwd=ROOT, check=True)


if __name__ == '__main__':
    args = sys.argv[1:]
    if args[:1] == ['--clean-outputs']:
        for p in args[1:]: clean_outputs(Path(p).resolve())
        sys.exit(0)
    if args == ['--modules']: paths = sorted((ROOT / 'nbs').glob('[0-9]*.ipynb'))
    else: paths = [Path(p).resolve() for p in args] or sorted((ROOT / 'nbs' / 'tutorials').glob('*.ipynb'))
    for p in paths: run(p)
