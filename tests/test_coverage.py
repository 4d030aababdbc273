"Exact coverage (flowrl_nb.completions, flowrl_nb.coverage): the enumeration is complete and exact, and every metric matches a hand computation."
import math, tempfile
import pytest, torch
from flowrl_nb.config import FlowRLConfig
from flowrl_nb.completions import CompletionSpace, tree_logprobs, tree_logprobs_batch
from flowrl_nb.coverage import COVERAGE_METRICS, CoverageHook, ExactCoverage, _merged_copy, coverage_of
from flowrl_nb.model import load_policy, token_logprobs
from flowrl_nb.rollout import HFRolloutEngine
from flowrl_nb.task import DigitSumTask

torch.set_num_threads(1)


@pytest.fixture(scope='module')
def policy():
    "The tiny model with a LoRA adapter moved away from zero (so π ≠ π_ref)."
    model, tok = load_policy('tiny')
    with torch.no_grad():
        g = torch.Generator().manual_seed(0)
        for n, p in model.named_parameters():
            if 'lora_B' in n: p.normal_(0, 0.05, generator=g)
    return model.eval(), tok


@torch.no_grad()
def walk_as_before(model, prompt_ids, space, temperature):
    "The walk as it was before issue 18 (one prompt, a DynamicCache copied per chunk, SDPA): the oracle for today's walk."
    from transformers import DynamicCache
    toks, stops = torch.tensor(space.token_ids), torch.tensor(space.stop_ids)
    cont = torch.tensor([t for t in space.token_ids if t not in space.stop_ids])
    T, C, S = space.max_len, len(cont), len(stops)
    offset = [0, 0]
    for k in range(1, T): offset.append(offset[-1] + S * C ** (k - 1))
    out = torch.empty(len(space), dtype=torch.float64)
    lp_of = lambda logits: (logits[:, -1].float() / temperature).log_softmax(-1).double()
    def walk(cache, lp, prefix_lp, depth, first):
        k, R = depth + 1, len(prefix_lp)
        last = toks if k == T else stops
        out[offset[k] + first * len(last): offset[k] + (first + R) * len(last)] = (prefix_lp[:, None] + lp[:, last]).reshape(-1)
        if k == T: return
        child_lp = prefix_lp[:, None] + lp[:, cont]
        per = max(1, 4096 // C)
        for i in range(0, R, per):
            j = min(R, i + per)
            kv = DynamicCache(ddp_cache_data=[(l.keys[i:j].repeat_interleave(C, 0), l.values[i:j].repeat_interleave(C, 0)) for l in cache.layers])
            o = model(input_ids=cont.repeat(j - i)[:, None], past_key_values=kv, use_cache=True)
            walk(o.past_key_values, lp_of(o.logits), child_lp[i:j].reshape(-1), depth + 1, (first + i) * C)
    o = model(input_ids=torch.tensor([list(prompt_ids)]), use_cache=True)
    walk(o.past_key_values, lp_of(o.logits), torch.zeros(1, dtype=torch.float64), 0, 0)
    return out


def coverage(tok, task, max_len):
    return ExactCoverage(tok, task.rows(), max_len, reward_fn=task.reward,
                         is_correct=lambda row, y: task.is_correct(row['target'], y), is_well_formed=task.is_well_formed)


# ---- the enumeration: complete, exact, the sampler's own space -------------------------------------------------------

@pytest.mark.parametrize('max_digits,max_len,lo,hi,partial,temperature', [
    (1, 2, 1, 9, False, 1.0),       # one-digit answers
    (1, 3, 3, 5, True, 1.0),        # room for more tokens than the task needs, partial credit
    (2, 3, 5, 18, False, 1.0),      # two digits, the whole target range
    (2, 3, 2, 4, True, 0.7),        # partial credit and another temperature
    (3, 4, 12, 13, False, 1.0),     # the built-in size (two prompts to keep it quick)
    (3, 4, 27, 27, True, 1.3),      # a single-answer prompt ("999")
])
def test_enumeration_sums_to_one(policy, max_digits, max_len, lo, hi, partial, temperature):
    model, tok = policy
    task = DigitSumTask(min_target=lo, max_target=hi, max_digits=max_digits, partial_credit=partial)
    res = coverage(tok, task, max_len).evaluate(model, temperature=temperature, beta=15.0)
    for p in res.per_prompt:
        assert abs(p['total_mass'] - 1.0) < 1e-5, p
        assert p['num_correct'] == task.num_correct(int(p['prompt'][2:-1]))
    merged = _merged_copy(model)  # the model the evaluator walks
    for prompt, lp in zip(res.evaluator.prompt_ids, res.logp):  # today's walk (all prompts at once) equals the walk before it
        before = walk_as_before(merged, prompt, res.evaluator.space, temperature)
        assert torch.allclose(lp, before, rtol=1e-5, atol=1e-5)     # float32 rounding of the logits, summed along the path
        assert (lp.exp() - before.exp()).abs().sum() < 1e-6         # the two distributions: L1 distance (float32 level)
    ref = res.evaluator.reference(model, temperature)
    assert all(abs(r.exp().sum().item() - 1.0) < 1e-5 for r in ref)


@pytest.mark.parametrize('max_len', [1, 2, 3])
def test_every_leaf_matches_teacher_forcing(policy, max_len):
    "Each leaf's tree-walk log-prob is what a plain batched forward (the training code) gives for that completion."
    model, tok = policy
    space = CompletionSpace.build(tok, max_len)
    prompt = tok('S=9:').input_ids
    lp = tree_logprobs(model, prompt, space, temperature=0.9, chunk_size=50)
    mask = (torch.arange(max_len) < space.lengths[:, None]).long()
    with torch.no_grad():
        tf = token_logprobs(model, torch.tensor([prompt] * len(space)), torch.ones(len(space), len(prompt), dtype=torch.long),
                            space.tokens, mask, temperature=0.9).logp.sum(1)
    assert torch.allclose(lp.float(), tf, rtol=5e-5, atol=2e-4)   # float32 rounding grows with |log π|
    assert len(set(map(tuple, space.tokens.tolist()))) == len(space)   # no leaf twice
    assert abs(lp.exp().sum().item() - 1.0) < 1e-5


@pytest.mark.parametrize('chunk_size', [7, 64, 4096])  # 64: 4 parents per chunk, so chunks cut across prompts
def test_prompts_walked_together_equal_one_at_a_time(policy, chunk_size):
    "Prompts of two lengths, walked together in chunks that cut across prompts, give each prompt's own walk."
    model, tok = policy
    space = CompletionSpace.build(tok, 3)
    prompts = [tok(p).input_ids for p in ('S=9:', 'S=13:', 'S=5:', 'S=17:', 'S=8:')]
    assert len({len(p) for p in prompts}) == 2
    together = tree_logprobs_batch(model, prompts, space, temperature=0.8, chunk_size=chunk_size)
    for p, lp in zip(prompts, together):
        assert torch.allclose(lp, tree_logprobs(model, p, space, temperature=0.8), rtol=1e-6, atol=1e-6)
        assert torch.allclose(lp, walk_as_before(model, p, space, 0.8), rtol=1e-5, atol=1e-5)
    assert model.config._attn_implementation != 'flowrl_tree'   # the walk's attention is switched back afterwards


def test_walk_attention_refuses_what_it_does_not_compute():
    "The walk's attention is plain softmax over the whole context: a sliding window shorter than it, or logit soft-capping, is refused."
    from flowrl_nb.completions import _tree_attention
    q, k = torch.zeros(2, 4, 1, 8), torch.zeros(2, 2, 5, 8)
    out, _ = _tree_attention(None, q, k, k, None, sliding_window=5)
    assert out.shape == (2, 1, 4, 8)
    with pytest.raises(NotImplementedError, match='sliding_window'): _tree_attention(None, q, k, k, None, sliding_window=4)
    with pytest.raises(NotImplementedError, match='softcap'): _tree_attention(None, q, k, k, None, softcap=30.0)


def test_merged_walk_is_the_adapter_walk(policy):
    "ExactCoverage walks a LoRA-merged copy of the policy: the same distribution as the adapter layers, model untouched."
    model, tok = policy
    task = DigitSumTask(min_target=9, max_target=10, max_digits=2)
    ev = coverage(tok, task, 3)
    before = {n: p.clone() for n, p in model.named_parameters()}
    merged, direct = ev.walk(model, 0.9), ev.walk(model, 0.9, merge=False)
    for a, b in zip(merged, direct):
        assert torch.allclose(a, b, rtol=5e-5, atol=1e-4) and abs(a.exp().sum().item() - 1) < 1e-5
    assert type(model).__name__ == 'PeftModelForCausalLM'
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())


def test_reference_after_training_is_the_base_model(policy):
    "A reference first computed after the adapters moved (coverage_steps > 0 in a trainer) is still the base model."
    model, tok = policy
    task = DigitSumTask(min_target=9, max_target=10, max_digits=2)
    ev = coverage(tok, task, 3)
    ref = ev.reference(model, 0.9)
    fresh, _ = load_policy('tiny')   # adapters at zero: exactly the base model
    base = coverage(tok, task, 3).walk(fresh, 0.9, merge=False)
    adapted = ev.walk(model, 0.9)
    for r, b, a in zip(ref, base, adapted):
        assert torch.allclose(r, b, rtol=5e-5, atol=1e-4)
        assert (r - a).abs().max() > 1e-2   # the moved adapters do change the policy


def test_space_is_what_the_sampler_draws(policy):
    "Sampled completions decode to leaf texts, and their sampler log-probs equal the leaves' log-probs."
    model, tok = policy
    space = CompletionSpace.build(tok, 4)
    lp = tree_logprobs(model, tok('S=13:').input_ids, space)
    by_tokens = {tuple(r[:n].tolist()): i for i, (r, n) in enumerate(zip(space.tokens, space.lengths.tolist()))}
    torch.manual_seed(0)
    b = HFRolloutEngine(model, tok, max_prompt_length=16).generate(['S=13:'], 64, max_new_tokens=4)
    for ids, m, text, rl in zip(b.completion_ids, b.completion_mask, b.completions, b.rollout_logp):
        i = by_tokens[tuple(ids[m.bool()].tolist())]
        assert space.texts[i] == text
        assert abs(lp[i].item() - rl.sum().item()) < 2e-4 + 5e-5 * abs(lp[i].item())


def test_space_sizes_and_refusal():
    tok = _TwoTokens()
    space = CompletionSpace.build(tok, 3)
    assert space.texts == ['', 'a', 'aaa', 'aa']               # walk order: the last level lists 'a' before EOS
    assert space.ended.tolist() == [True, True, False, True]   # "aaa" is cut at 3 tokens, the others end with EOS
    with pytest.raises(ValueError, match='more than max_leaves=10'):
        CompletionSpace.build(tok, 20, max_leaves=10)
    with pytest.raises(ValueError, match='max_len must be an integer >= 1'):
        CompletionSpace.build(tok, 0)


# ---- every metric on a hand-computed case -----------------------------------------------------------------------------

class _TwoTokens:
    "A two-token tokenizer: 'a' (0) and EOS (1)."
    eos_token_id, pad_token_id = 1, 1
    def __len__(self): return 2
    def __call__(self, text): return type('Enc', (), {'input_ids': [0] * len(text)})()
    def batch_decode(self, seqs, skip_special_tokens=False): return ['a' * len(s) for s in seqs]


def lg(*p): return torch.tensor(p, dtype=torch.float64).log()


def test_metrics_by_hand_on_a_two_token_space():
    # leaves "", "a", "aa", "aaa" (any order); correct: "a" and "aa" (reward 1); "aaa" is not well formed
    pi, ref = [0.1, 0.6, 0.2, 0.1], [0.25, 0.25, 0.25, 0.25]
    r, c, wf = [0., 1, 1, 0], [0, 1, 1, 0], [1, 1, 1, 0]
    beta = math.log(3)
    m = coverage_of(lg(*pi), lg(*ref), torch.tensor(r), torch.tensor(c), beta, torch.tensor(wf))
    # p*_β ∝ π_ref·e^{βr} = (1, 3, 3, 1)/8;  p*_∞ = (0, ½, ½, 0);  π_C = (0, ¾, ¼, 0)
    t = [1 / 8, 3 / 8, 3 / 8, 1 / 8]
    hand = {
        'correct_mass': 0.8, 'well_formed_mass': 0.9, 'expected_reward': 0.8, 'total_mass': 1.0,
        'kl_pi_target': sum(p * math.log(p / q) for p, q in zip(pi, t)),
        'kl_target_pi': sum(q * math.log(q / p) for p, q in zip(pi, t)),
        'kl_pi_target_inf': 0.75 * math.log(0.75 / 0.5) + 0.25 * math.log(0.25 / 0.5),
        'kl_target_pi_inf': 0.5 * math.log(0.5 / 0.75) + 0.5 * math.log(0.5 / 0.25),
        'effective_modes': math.exp(-(0.75 * math.log(0.75) + 0.25 * math.log(0.25))),
        'target_effective_modes': 2.0, 'target_correct_mass': 0.75,
        'modes_covered': 1.0, 'modes_covered_correct': 1.0, 'num_correct': 2,
    }
    assert set(m) == set(hand)
    for k, v in hand.items(): assert m[k] == pytest.approx(v, abs=1e-9), k
    assert hand['kl_pi_target'] == pytest.approx(0.111651, abs=1e-6)


def test_modes_covered_counts_and_the_correct_mass_confound():
    # three correct answers with a uniform target; the policy writes them rarely but evenly
    pi = [0.02, 0.02, 0.02, 0.94]
    m = coverage_of(lg(*pi), lg(.25, .25, .25, .25), torch.tensor([1., 1, 1, 0]), torch.tensor([1, 1, 1, 0]), 1.0)
    assert m['modes_covered'] == 0.0                 # 0.02 < 0.1 · ⅓: confounded by the low correct mass ...
    assert m['modes_covered_correct'] == 1.0          # ... while π_C = p*_∞ exactly
    assert m['kl_pi_target_inf'] == pytest.approx(0.0, abs=1e-12) and m['effective_modes'] == pytest.approx(3.0)
    # a collapsed policy: one correct answer holds nearly everything
    m = coverage_of(lg(0.97, 0.02, 0.001, 0.009), lg(.25, .25, .25, .25), torch.tensor([1., 1, 1, 0]),
                    torch.tensor([1, 1, 1, 0]), 1.0)
    assert m['modes_covered'] == pytest.approx(1 / 3)          # only 0.97 ≥ 0.1·⅓
    assert m['modes_covered_correct'] == pytest.approx(1 / 3)  # 0.02/0.991 < 1/30 too
    assert m['effective_modes'] < 1.2


class _Fixed(ExactCoverage):
    "ExactCoverage whose walks return given log-probs (to test the averaging and batch metrics by hand)."
    def __init__(self, pis, refs, **kw):
        super().__init__(_TwoTokens(), [{'prompt': 'x'}, {'prompt': 'xx'}], 3, reward_fn=lambda completions, **k: [float(y in ('a', 'aa')) for y in completions],
                         is_correct=lambda row, y: y in ('a', 'aa') if row['prompt'] == 'x' else y == 'a', **kw)
        self._pis, self._refs = pis, refs
    def walk(self, model, temperature=1.0): return self._pis
    def reference(self, model, temperature=1.0): return self._refs


def test_averages_over_prompts_solved_and_batch_metrics():
    # space order: "", "a", "aaa", "aa"
    pis = [lg(0.1, 0.6, 0.1, 0.2), lg(0.3, 0.3, 0.1, 0.3)]       # prompt 1 solved (V=0.8), prompt 2 not (V=0.3)
    refs = [lg(.25, .25, .25, .25)] * 2
    ev = _Fixed(pis, refs)
    model = torch.nn.Module(); model.lora_B = torch.nn.Parameter(torch.ones(1))   # an adapter that is not the identity
    res = ev.evaluate(model, beta=1.0, batch={'prompts': ['x'] * 3 + ['xx'] * 3, 'group_size': 3,
                                              'completions': ['a', 'a', 'aa', 'a', 'aa', 'zz']})
    m = res.metrics
    assert m['coverage/correct_mass'] == pytest.approx((0.8 + 0.3) / 2)
    assert m['coverage/prompts_solved_frac'] == 0.5
    assert m['coverage/effective_modes_solved'] == pytest.approx(math.exp(-(0.75 * math.log(0.75) + 0.25 * math.log(0.25))))
    assert m['coverage/effective_modes'] == pytest.approx((m['coverage/effective_modes_solved'] + 1.0) / 2)
    assert m['coverage/batch_distinct_correct'] == pytest.approx((2 + 1) / 2)   # {a, aa} for "x", {a} for "xx"
    assert {f'coverage/{k}' for k in COVERAGE_METRICS} | {'time/coverage'} == set(m)
    d = res.distribution(0)
    assert d['completions'] == ['a', 'aa'] and d['pi'] == pytest.approx([0.6, 0.2]) and d['target_inf'] == pytest.approx([0.5, 0.5])
    # with a zero adapter the policy is the reference: the walk is skipped and every KL to p*_∞ is 0
    model.lora_B.data.zero_()
    assert ev.evaluate(model, beta=1.0).metrics['coverage/kl_pi_target_inf'] == pytest.approx(0.0, abs=1e-12)


# ---- the trainer's hook -----------------------------------------------------------------------------------------------

SMALL = dict(task_max_digits=2, max_completion_length=3, task_min_target=5, task_max_target=9, prompts_per_step=4,
             num_generations=4, num_mini_batches=2, save_steps=0, learning_rate=5e-3)


def test_trainer_logs_coverage_every_n_steps_without_changing_training(tmp_path):
    from flowrl_nb.trainer import Trainer
    from flowrl_nb.runlog import load_run
    a = Trainer(FlowRLConfig(**SMALL, coverage_steps=2, output_dir=str(tmp_path / 'a')))
    ha = a.train(4)
    assert [('coverage/correct_mass' in m) for m in ha] == [False, True, False, True]
    assert all(abs(m['coverage/total_mass'] - 1) < 1e-5 for m in ha[1::2])
    hook = next(h for h in a.hooks if isinstance(h, CoverageHook))
    assert isinstance(hook.evaluator, ExactCoverage) and len(hook.evaluator.rows) == 5 and hook.last[0] == 4
    b = Trainer(FlowRLConfig(**SMALL, coverage_steps=0, output_dir=str(tmp_path / 'b')))
    hb = b.train(4)
    same = lambda h: [(m['reward/mean'], m['actor/final_loss']) for m in h]
    assert same(ha) == same(hb)                       # measuring draws no random numbers and trains nothing
    assert load_run(a.run_dir).series('coverage/correct_mass')[0] == [2, 4]
    assert a.rewards.calls == 4                       # the run's own reward counters are untouched by coverage


def test_background_coverage_equals_inline_and_lands_in_the_log(tmp_path):
    "Measured beside training, coverage has inline's values, lands in train()'s metrics and in the log as a late record of its step."
    from flowrl_nb.trainer import Trainer
    from flowrl_nb.runlog import load_run, read_jsonl
    runs, hist = {}, {}
    for mode in ('inline', 'background'):  # one after the other: each trainer seeds the global RNGs as it is built
        runs[mode] = Trainer(FlowRLConfig(**SMALL, coverage_steps=2, coverage_mode=mode, output_dir=str(tmp_path / mode)))
        hist[mode] = runs[mode].train(4, progress=False)
    hook = next(h for h in runs['background'].hooks if isinstance(h, CoverageHook))
    assert hook.background and hook.last[0] == 4
    for a, b in zip(hist['inline'], hist['background']):
        assert {k: v for k, v in a.items() if not k.startswith(('time/', 'perf/'))} == \
               {k: v for k, v in b.items() if not k.startswith(('time/', 'perf/'))}
    assert [('coverage/correct_mass' in m) for m in hist['background']] == [False, True, False, True]
    recs = [r for r in read_jsonl(runs['background'].run_dir / 'metrics.jsonl') if r['type'] == 'step']
    assert [r['step'] for r in recs].count(2) == 2   # the step's record, then its coverage when it landed
    late = next(r for r in recs if r['step'] == 2 and 'coverage/correct_mass' in r)
    assert set(late) - {'type', 'step', 'time'} == {k for k in hist['background'][1] if k.startswith('coverage/')} | {'time/coverage'}
    run = load_run(runs['background'].run_dir)
    assert [m['step'] for m in run.metrics] == [1, 2, 3, 4]
    import threading   # train() ended: its measuring thread and that thread's copy of the policy are gone
    assert not any(t.name == 'flowrl_nb-coverage' for t in threading.enumerate()) and hook._worker is None
    assert run.series('coverage/correct_mass') == load_run(runs['inline'].run_dir).series('coverage/correct_mass')


def test_background_checkpoints_wait_and_held_steps_are_logged(tmp_path):
    "A checkpoint waits for the measurements handed over before it; a measured step is logged whole even between logging_steps."
    from flowrl_nb.trainer import Trainer
    from flowrl_nb.runlog import load_run, read_jsonl
    tr = Trainer(FlowRLConfig(**SMALL, coverage_steps=1, output_dir=str(tmp_path / 'a')))
    tr.train_step()                      # hands step 1's snapshot over and returns (no train(): nothing waits for it)
    tr.save_checkpoint()
    assert any(r.get('step') == 1 and 'coverage/correct_mass' in r for r in read_jsonl(tr.run_dir / 'metrics.jsonl'))
    next(h for h in tr.hooks if isinstance(h, CoverageHook)).on_end(tr)
    b = Trainer(FlowRLConfig(**SMALL, coverage_steps=2, logging_steps=3, output_dir=str(tmp_path / 'b')))
    b.train(4, progress=False)
    run = load_run(b.run_dir)            # step 2 (measured) and 3 (logging_steps) and 4 (the last) are logged whole
    assert [m['step'] for m in run.metrics] == [2, 3, 4]
    assert all('reward/mean' in m for m in run.metrics) and 'coverage/correct_mass' in run.metrics[0]


def test_background_error_is_raised_in_the_training_thread(tmp_path, monkeypatch):
    from flowrl_nb.trainer import Trainer
    def broken(self, *a, **k): raise FloatingPointError('walk diverged')
    monkeypatch.setattr(ExactCoverage, 'evaluate', broken)
    tr = Trainer(FlowRLConfig(**SMALL, coverage_steps=1, output_dir=str(tmp_path / 'r')))
    with pytest.raises(RuntimeError, match='exact coverage failed in the background: FloatingPointError: walk diverged'):
        tr.train(3, progress=False)
    assert tr.status == 'failed'


def test_not_enumerable_logs_nothing(tmp_path):
    from flowrl_nb.trainer import Trainer
    rows = [{'prompt': 'S=5:'}, {'prompt': 'S=6:'}]   # no "target" column: the task cannot tell what is correct
    tr = Trainer(FlowRLConfig(**SMALL, coverage_steps=1, output_dir=str(tmp_path / 'r')), rows=rows,
                 reward_funcs=lambda prompts, completions, **kw: [float(len(c)) for c in completions])
    m = tr.train_step()
    hook = next(h for h in tr.hooks if isinstance(h, CoverageHook))
    assert not any(k.startswith('coverage/') for k in m) and hook.evaluator is None and tr.snapshot().coverage is None
    assert not any(k.startswith('coverage/') for k in tr.snapshot().expected)
