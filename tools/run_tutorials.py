"""Execute tutorial notebooks in place so the outputs committed with them (plots, printed numbers) are current.

    python tools/run_tutorials.py                       # every notebook in nbs/tutorials/
    python tools/run_tutorials.py nbs/tutorials/03_reading_the_objective.ipynb

Tutorials are committed WITH outputs: the docs site shows what is saved in them (nbdev's docs processing does not
run them). Cells flagged `#| gpu` run only when CUDA is available; otherwise they are skipped and their outputs
cleared, so a saved output is always one that this machine produced. Afterwards `nbdev_clean` normalises the files,
exactly as tools/test.sh expects.
"""
import re, subprocess, sys, time
from pathlib import Path
import nbformat
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]
_GPU = re.compile(r'^\s*#\|\s*gpu\s*$', re.MULTILINE)


def _has_cuda() -> bool:
    try:
        import torch
        return torch.cuda.is_available()
    except Exception: return False


def run(path: Path, timeout: int = 1800) -> float:
    "Execute `path` in place (skipping `#| gpu` cells without CUDA) and return the seconds it took."
    nb = nbformat.read(path, as_version=4)
    cuda = _has_cuda()
    skipped = 0
    for cell in nb.cells:
        tags = cell.metadata.setdefault('tags', [])
        if cell.cell_type == 'code' and _GPU.search(cell.source) and not cuda:
            if 'skip-execution' not in tags: tags.append('skip-execution')
            cell.outputs, cell.execution_count = [], None
            skipped += 1
    t0 = time.perf_counter()
    NotebookClient(nb, timeout=timeout, kernel_name='python3', resources={'metadata': {'path': str(path.parent)}}).execute()
    took = time.perf_counter() - t0
    # Widget state (nbclient saves it) would embed each live figure's JavaScript bundle, megabytes per widget: the
    # committed notebook keeps the widgets' outputs, and the docs show a screenshot of the live dashboard instead.
    nb.metadata.pop('widgets', None)
    for cell in nb.cells:  # drop the helper tag again: the committed notebook carries only nbdev's own flags
        tags = cell.metadata.get('tags')
        if tags is not None:
            if 'skip-execution' in tags: tags.remove('skip-execution')
            if not tags: del cell.metadata['tags']
    nbformat.write(nb, path)
    subprocess.run([str(Path(sys.executable).parent / 'nbdev_clean'), '--fname', str(path)], cwd=ROOT, check=True)
    print(f'{path.relative_to(ROOT)}: {took:.1f} s' + (f' ({skipped} #| gpu cell(s) skipped: no CUDA)' if skipped else ''))
    return took


if __name__ == '__main__':
    paths = [Path(p).resolve() for p in sys.argv[1:]] or sorted((ROOT / 'nbs' / 'tutorials').glob('*.ipynb'))
    for p in paths: run(p)
