"""flowrl_nb.data: every benchmark file loads into the one record shape; missing fields and offline hub names fail clearly;
prompts use a chat template when the tokenizer has one."""
import json, sys, types

import pytest

from flowrl_nb.data import (BENCHMARKS, FieldMap, MATH_INSTRUCTION, build_prompt, load_benchmark, math_eval_dir, to_record,
                            to_rows)

MATH_EVAL = math_eval_dir()  # the copy shipped in the repository's data/ folder (and inside the wheel)
SIZES = {'math500': 500, 'aime24': 30, 'amc23': 40, 'minerva_math': 272, 'olympiadbench': 675, 'gsm8k': 1319}


@pytest.mark.parametrize('name', sorted(SIZES))
def test_every_file_loads_whole(name):
    assert (MATH_EVAL / f'{name}.jsonl').is_file() and MATH_EVAL.parts[-2:] in (('data', 'math_eval'), ('_data', 'math_eval'))
    recs = load_benchmark(name)
    assert len(recs) == SIZES[name]
    assert all(set(r) == {'id', 'problem', 'answer', 'solution', 'source'} for r in recs)
    assert len({r['id'] for r in recs}) == len(recs)                      # ids are unique within a set
    assert all(isinstance(r['problem'], str) and r['problem'].strip() for r in recs)
    assert all(isinstance(r['answer'], str) and r['answer'].strip() for r in recs)
    assert all(r['source'] == name for r in recs)
    if name != 'amc23': assert all(r['solution'] for r in recs)
    else: assert all(r['solution'] is None for r in recs)


def test_field_differences_are_handled():
    assert load_benchmark('gsm8k', limit=1)[0]['answer'] == '18'
    assert load_benchmark('amc23', limit=1)[0]['answer'] == '27'          # 27.0 in the file
    assert load_benchmark('minerva_math', limit=1)[0]['answer'] == '1.6'  # from the solution's box
    olymp = load_benchmark('olympiadbench')
    assert not any('$' in r['answer'] for r in olymp)
    assert all(',' not in r['answer'] or r['answer'].count(',') >= 1 for r in olymp)
    gsm = load_benchmark('gsm8k')
    assert all('####' not in r['answer'] and '####' in r['solution'] for r in gsm)


def test_env_override_and_paths(monkeypatch, tmp_path):
    monkeypatch.setenv('FLOWRL_NB_MATH_EVAL', str(MATH_EVAL))
    assert len(load_benchmark('aime24')) == 30
    assert len(load_benchmark(MATH_EVAL / 'aime24.jsonl', limit=5)) == 5
    monkeypatch.setenv('FLOWRL_NB_MATH_EVAL', str(tmp_path))
    with pytest.raises(FileNotFoundError, match="no benchmark 'aime24' in"): load_benchmark('aime24')
    monkeypatch.setenv('FLOWRL_NB_MATH_EVAL', str(tmp_path / 'nowhere'))
    with pytest.raises(FileNotFoundError, match='FLOWRL_NB_MATH_EVAL=.* is not a folder'): load_benchmark('aime24')


def test_no_benchmark_suggests_a_different_name(tmp_path):
    with pytest.raises(FileNotFoundError) as e: load_benchmark('gsm8k', data_dir=tmp_path)
    assert 'did you mean' not in str(e.value) and 'known: none' in str(e.value)
    with pytest.raises(FileNotFoundError, match='did you mean "gsm8k"'): load_benchmark('gsm8j')


def test_no_source_reaches_outside_the_checkout():
    """A user's clone holds only the repository: no module, test, tool or notebook source may name a relative path that
    climbs out of it (saved outputs aside), such as a data folder that sat beside the developers' checkout."""
    import re
    from pathlib import Path
    root = Path(__file__).resolve().parents[1]
    files = [p for d in ('flowrl_nb', 'tools', 'nbs', 'bench', '.ci', 'tests') for p in (root / d).rglob('*') if p.is_file()]
    climb = re.compile(r'(?:\.\./)+[\w.-]+')  # one or more parent steps, then a name

    def outside(text, folder):  # relative paths in a source are read from its own folder (nbdev, the tools, the notebooks)
        return [m.group() for m in climb.finditer(text) if not (folder / m.group()).resolve().is_relative_to(root)]
    assert outside('open("' + '../' * 3 + 'data/x")', root / 'nbs') and not outside('see ../nbs/a.ipynb', root / 'flowrl_nb')
    hits = []
    for p in files + [root / 'setup.py']:
        if p.suffix == '.ipynb':
            texts = [''.join(c['source']) for c in json.loads(p.read_text(encoding='utf-8'))['cells']]
        elif p.suffix in ('.py', '.sh', '.yml', '.yaml', '') and '__pycache__' not in p.parts: texts = [p.read_text(encoding='utf-8', errors='replace')]
        else: continue
        hits += [f'{p.relative_to(root)}: {h}' for t in texts for h in outside(t, p.parent)]
    assert not hits, hits


def test_missing_field_names_the_field_and_line(tmp_path):
    p = tmp_path / 'mine.jsonl'
    p.write_text(json.dumps({'problem': 'p', 'answer': '1'}) + '\n' + json.dumps({'problem': 'q', 'gold': '2'}) + '\n')
    with pytest.raises(ValueError, match=r"mine.jsonl line 2: no answer field \(looked for 'answer', 'final_answer'\); "
                                         r"this row has fields \['gold', 'problem'\]"):
        load_benchmark(p)
    q = tmp_path / 'other.json'
    q.write_text(json.dumps([{'question': 'q', 'answer': 5, 'idx': 9}]))
    assert load_benchmark(q) == [{'id': '9', 'problem': 'q', 'answer': '5', 'solution': None, 'source': 'other'}]
    bad = tmp_path / 'bad.jsonl'; bad.write_text('{"problem": \n')
    with pytest.raises(ValueError, match='bad.jsonl line 1: not valid JSON'): load_benchmark(bad)
    custom = FieldMap(problem=('q',), answer=('gold',))
    assert to_record({'q': 'x', 'gold': 3}, custom)['answer'] == '3'


def test_hf_name_fails_clearly_offline(monkeypatch):
    monkeypatch.setitem(sys.modules, 'datasets', None)      # as if not installed
    with pytest.raises(ImportError, match=r'pip install "flowrl_nb\[data\]"'): load_benchmark('HuggingFaceH4/MATH-500')
    fake = types.ModuleType('datasets')
    def load_dataset(*a, **k): raise ConnectionError('hub unreachable')
    fake.load_dataset = load_dataset
    monkeypatch.setitem(sys.modules, 'datasets', fake)
    monkeypatch.setenv('HF_HUB_OFFLINE', '1')
    with pytest.raises(RuntimeError, match=r"could not load the Hugging Face dataset 'HuggingFaceH4/MATH-500'.*the hub is "
                                           r"switched off.*use a shipped benchmark by name"):
        load_benchmark('HuggingFaceH4/MATH-500')
    monkeypatch.delenv('HF_HUB_OFFLINE'); monkeypatch.delenv('HF_DATASETS_OFFLINE', raising=False)
    with pytest.raises(RuntimeError, match='ConnectionError: hub unreachable'): load_benchmark('HuggingFaceH4/MATH-500')


def test_hf_rows_are_mapped(monkeypatch):
    fake = types.ModuleType('datasets')
    class DS(list):
        def select(self, idx): return DS(self[i] for i in idx)
    fake.load_dataset = lambda name, config, split: DS([{'question': 'q1', 'answer': 'w\n#### 7'}, {'question': 'q2', 'answer': '#### 8'}])
    monkeypatch.setitem(sys.modules, 'datasets', fake)
    recs = load_benchmark('openai/gsm8k', limit=1)
    assert recs == [{'id': '0', 'problem': 'q1', 'answer': '7', 'solution': 'w\n#### 7', 'source': 'gsm8k'}]


def test_prompt_with_a_real_chat_template():
    from transformers import AutoTokenizer
    from flowrl_nb.tiny import tiny_model_path
    tok = AutoTokenizer.from_pretrained(tiny_model_path())
    assert build_prompt('1+1?', tok).startswith('Question: 1+1?')
    tok.chat_template = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
                         "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
    p = build_prompt('1+1?', tok, system='Be brief.')
    assert p == ("<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\n1+1? " + MATH_INSTRUCTION +
                 "<|im_end|>\n<|im_start|>assistant\n")
    rows = to_rows([{'id': 'a', 'problem': '2+2?', 'answer': '4', 'solution': None, 'source': 's'}], tok)
    assert rows == [{'prompt': build_prompt('2+2?', tok), 'answer': '4', 'id': 'a'}]
