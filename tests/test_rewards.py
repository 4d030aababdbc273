"""flowrl_nb.rewards: reward functions are called exactly as TRL's GRPOTrainer calls them, so the examples of TRL's
documentation train here unchanged and with their real values; failures are counted, never scored as zeros."""
import json, math, re, shutil, warnings
from pathlib import Path

import pytest, torch

from flowrl_nb.config import FlowRLConfig
from flowrl_nb.rewards import RewardError, RewardFunctions, TrainerState
from flowrl_nb.runlog import load_run
from flowrl_nb.task import DigitSumTask
from flowrl_nb.tiny import tiny_model_path
from flowrl_nb.trainer import Trainer

torch.set_num_threads(1)
SMALL = dict(prompts_per_step=4, num_generations=4, num_mini_batches=2, max_steps=6, save_steps=0, coverage_steps=0)


# ------------------------------------------------ TRL's documented examples, copied verbatim from TRL's docs
# (docs/source/grpo_trainer.md, "Using a custom reward function"; reward_len from its quick start up to TRL 0.21)

def reward_len(completions, **kwargs):
    return [-abs(20 - len(completion)) for completion in completions]


def reward_func(completion_ids, **kwargs):
    """Reward function that assigns higher scores to longer completions (in terms of token count)."""
    return [float(len(ids)) for ids in completion_ids]


def format_reward_func(completions, **kwargs):
    """Reward function that checks if the completion has a specific format."""
    pattern = r"^<think>.*?</think><answer>.*?</answer>$"
    completion_contents = [completion[0]["content"] for completion in completions]
    matches = [re.match(pattern, content) for content in completion_contents]
    return [1.0 if match else 0.0 for match in matches]


def ground_truth_reward(completions, ground_truth, **kwargs):  # TRL's example 3, `reward_func`, renamed to tell it apart
    # Regular expression to capture content inside \boxed{}
    matches = [re.search(r"\\boxed\{(.*?)\}", completion) for completion in completions]
    contents = [match.group(1) if match else "" for match in matches]
    # Reward 1 if the content is the same as the ground truth, 0 otherwise
    return [1.0 if c == gt else 0.0 for c, gt in zip(contents, ground_truth)]


def logging_reward(completions, ground_truth, log_extra=None, log_metric=None, **kwargs):  # TRL's example 6, renamed
    extracted = [re.search(r"\\boxed\{(.*?)\}", c) for c in completions]
    extracted = [m.group(1) if m else None for m in extracted]
    rewards = [1.0 if e == gt else 0.0 for e, gt in zip(extracted, ground_truth)]

    if log_extra:
        log_extra("golden_answer", list(ground_truth))
        log_extra("extracted_answer", [e or "[none]" for e in extracted])

    if log_metric:
        log_metric("accuracy", sum(rewards) / len(rewards))

    return rewards


def _trainer(tmp_path, reward_funcs, rows=None, **kw):
    return Trainer(FlowRLConfig(**{**SMALL, 'output_dir': str(tmp_path / 'run'), **kw}), reward_funcs=reward_funcs, rows=rows)


def _digit_rows(with_truth=False):
    rows = DigitSumTask().rows()
    # ground truth for the boxed-answer examples: '' (no \boxed{} in the completion) for half of the prompts, so the
    # tiny model's digit answers really score 1 there and 0 elsewhere
    return [dict(r, ground_truth='' if r['target'] % 2 else str(r['target'])) for r in rows] if with_truth else rows


@pytest.mark.parametrize('fn', [reward_len, reward_func])
def test_trl_examples_train_with_their_real_values(tmp_path, fn):
    tr = _trainer(tmp_path, [fn])
    for _ in range(2):
        m = tr.train_step()
        b = tr.last_batch
        expect = fn(completions=b['completions'], completion_ids=[[0] * k for k in b['lengths']])  # ids: only their number matters
        assert b['rewards'] == pytest.approx(expect) and len(expect) == 16
        assert m['reward/errors'] == 0 and m['reward/mean'] == pytest.approx(sum(expect) / len(expect))
        assert m[f'reward/{fn.__name__}'] == pytest.approx(sum(expect) / len(expect))
        assert any(v != 0 for v in expect)  # real values, not the zeros a failing call used to become
    assert tr.opt_steps == 4


def test_ground_truth_column_and_logging_callbacks(tmp_path):
    tr = _trainer(tmp_path, [ground_truth_reward, logging_reward], rows=_digit_rows(with_truth=True))
    tr.train(2)
    b, run = tr.last_batch, load_run(tr.run_dir)
    truth = [r['ground_truth'] for r in _digit_rows(True) for _ in range(4)]
    assert set(b['extra']) == {'golden_answer', 'extracted_answer'} and len(b['extra']['golden_answer']) == 16
    assert set(b['extra']['extracted_answer']) == {'[none]'}  # the tiny model writes digits, never \boxed{}
    for m in run.metrics:
        assert m['reward/errors'] == 0 and 'accuracy' in m
        assert m['accuracy'] == m['reward/logging_reward'] == 0.0  # no \boxed{}: extracted None never equals the truth
        assert 0 < m['reward/ground_truth_reward'] < 1        # no \boxed{}: "" equals the truth on half of the prompts
    # the column really reached the function: answers scored 1 exactly where the ground truth is ''
    expect = [1.0 if gt == '' else 0.0 for gt in b['extra']['golden_answer']]
    assert tr.rewards.last_values['ground_truth_reward'] == expect and 0 < sum(expect) < 16
    assert set(b['extra']['golden_answer']) <= set(truth)


@pytest.fixture(scope='module')
def chat_model(tmp_path_factory):
    "The tiny model with a chat template (the user turn's text, as the plain prompt would be)."
    d = tmp_path_factory.mktemp('chat') / 'tiny-chat'
    shutil.copytree(tiny_model_path(), d)
    cfg = json.loads((d / 'tokenizer_config.json').read_text())
    cfg['chat_template'] = "{% for m in messages %}{{ m['content'] }}{% endfor %}"
    (d / 'tokenizer_config.json').write_text(json.dumps(cfg))
    return d


def test_conversational_rows_and_completions(tmp_path, chat_model):
    rows = [{'prompt': [{'role': 'user', 'content': r['prompt']}], 'target': r['target']} for r in DigitSumTask().rows()]
    task = DigitSumTask()
    seen = {}
    def spy(prompts, completions, **kwargs):  # records what a chat-format reward function receives
        seen.update(prompt=prompts[0], completion=completions[0])
        return [0.0] * len(completions)
    tr = _trainer(tmp_path, [format_reward_func, task.reward, spy], rows=rows, model_name_or_path=str(chat_model))
    m = tr.train_step()
    assert seen['prompt'] == rows[0]['prompt'] or seen['prompt'] in [r['prompt'] for r in rows]
    assert isinstance(seen['completion'], list) and seen['completion'][0]['role'] == 'assistant'
    assert m['reward/errors'] == 0 and m['reward/format_reward_func'] == 0.0  # its real value: no <think> tags here
    # the digit-sum reward reads the chat completions' text: its mean is the correct fraction of the sampled answers
    b = tr.last_batch  # b['prompts'] are the rendered prompts: the chat template gives back 'S=<t>:'
    correct = [float(task.is_correct(int(p[2:-1]), c)) for p, c in zip(b['prompts'], b['completions'])]
    assert m['reward/digit_sum'] == pytest.approx(sum(correct) / len(correct))


def test_async_reward_function_in_a_run(tmp_path):
    async def slow_len(completions, **kwargs):
        import asyncio
        await asyncio.sleep(0.01)
        return [float(len(c)) for c in completions]
    tr = _trainer(tmp_path, [slow_len])
    m = tr.train_step()
    assert tr.rewards.is_async == [True]
    assert m['reward/slow_len'] == pytest.approx(sum(len(c) for c in tr.last_batch['completions']) / 16)


def test_reserved_column_names_are_refused(tmp_path):
    rows = [dict(r, completions='x') for r in DigitSumTask().rows()]
    with pytest.raises(ValueError, match=r"dataset column\(s\) \['completions'\] collide"):
        _trainer(tmp_path, None, rows=rows)


# ------------------------------------------------ RewardFunctions on its own
TASK = DigitSumTask()
PROMPTS, COMPS, TARGETS = ['S=5:', 'S=13:', 'S=6:', 'S=7:'], ['5', '94', '7', '16'], [5, 13, 6, 7]


def after_first(bad):
    "`bad`, except that its first call returns clean values (a function that works, then breaks)."
    calls = []
    def fn(completions, **kw):
        calls.append(1)
        return [1.0] * len(completions) if len(calls) == 1 else bad(completions, **kw)
    fn.__name__ = bad.__name__
    return fn


def raising(completions, **kw): raise RuntimeError('reward server down')
def inf_and_text(completions, **kw): return [math.inf, 'oops', 1.0, None]
def wrong_length(completions, **kw): return [1.0] * (len(completions) + 1)
def not_a_list(completions, **kw): return 1.0


@pytest.mark.parametrize('bad, missing, per_call', [
    (raising, [0, 1, 2, 3], 4), (inf_and_text, [0, 1, 3], 2), (wrong_length, [0, 1, 2, 3], 4), (not_a_list, [0, 1, 2, 3], 4)])
def test_later_failures_are_counted_and_score_nothing(bad, missing, per_call):
    rf = RewardFunctions([TASK.reward, after_first(bad)], weights=[1.0, 0.5])
    good = TASK.reward(completions=COMPS, target=TARGETS)
    assert good == [1.0, 1.0, 0.0, 1.0]
    assert rf(PROMPTS, COMPS, target=TARGETS).rewards == [g + 0.5 for g in good]  # the clean first batch
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        for call in range(3):
            out = rf(PROMPTS, COMPS, target=TARGETS)
            assert out.rewards == [g + (0.0 if i in missing else 0.5) for i, g in enumerate(good)]  # nothing made up
            assert out.metrics['reward/errors'] == per_call
            assert out.metrics['reward/errors_total'] == per_call * (call + 1) == rf.errors
    assert len(caught) == 1 and issubclass(caught[0].category, RuntimeWarning) and bad.__name__ in str(caught[0].message)
    if bad is raising: assert 'Traceback' in str(caught[0].message) and 'reward server down' in str(caught[0].message)
    assert rf.calls == 4 and [math.isnan(v) for v in rf.last_values[bad.__name__]] == [i in missing for i in range(4)]


@pytest.mark.parametrize('bad, match', [(raising, 'RuntimeError: reward server down'), (inf_and_text, r"not finite numbers in \[-1e\+08, 1e\+08\], first inf"),
                                        (wrong_length, 'returned 5 values for 4 completions'),
                                        (not_a_list, 'returned float, expected a list of 4 numbers')])
def test_first_batch_failures_are_user_errors(bad, match):
    rf = RewardFunctions([TASK.reward, bad])
    with pytest.raises(RewardError, match=match) as e:
        rf(PROMPTS, COMPS, target=TARGETS)
    msg = str(e.value)
    assert f"reward function '{bad.__name__}' cannot score the first batch" in msg
    assert 'completions=<4 str>' in msg and 'target=<4 int>' in msg and 'trainer_state=TrainerState(...)' in msg
    assert f'def {bad.__name__}(completions, **kwargs) -> list[float]' in msg


def test_none_and_nan_mean_not_applicable():
    rf = RewardFunctions([lambda completions, **k: [None, 2.0, math.nan, None]])
    with pytest.warns(RuntimeWarning, match='3 of 4 completions got no value'):
        out = rf(PROMPTS, COMPS, target=TARGETS)
    assert out.scored == [False, True, False, False] and out.rewards[1] == 2.0
    assert out.metrics['reward/errors'] == 0 and out.metrics['reward/unscorable'] == 3 and out.metrics['reward/lambda'] == 2.0
    both = RewardFunctions([lambda completions, **k: [None, 2.0, None, None], TASK.reward])(PROMPTS, COMPS, target=TARGETS)
    assert both.rewards == [1.0, 3.0, 0.0, 1.0]  # TRL's nansum: a None adds nothing, the other function still counts


def test_metrics_weights_and_state():
    def length(completions, trainer_state, **kw): return [float(len(c)) * trainer_state.global_step for c in completions]
    rf = RewardFunctions({'acc': TASK.reward, 'len': length}, weights=[2, -0.25])
    out = rf(PROMPTS, COMPS, trainer_state=TrainerState(global_step=1), target=TARGETS)
    assert out.rewards == pytest.approx([2 - 0.25, 2 - 0.5, -0.25, 2 - 0.5])
    assert out.metrics == {'reward/acc': 0.75, 'reward/len': 1.5, 'reward/errors': 0, 'reward/errors_total': 0,
                           'reward/unscorable': 0, 'reward/failed': 0}


def test_last_metrics_are_read_only_after_a_successful_call():
    class Verifier:  # a reward that reports its own failures through last_metrics, as MathReward does
        __name__ = 'verifier'
        def __init__(self): self.calls, self.last_metrics = 0, {}
        def __call__(self, completions, **kw):
            self.calls += 1
            if self.calls == 3: raise RuntimeError('down')
            self.last_metrics = {'errors': 1, 'timeouts': 1}
            return [1.0] * len(completions)
    rf = RewardFunctions(Verifier())
    assert [rf(PROMPTS, COMPS, target=TARGETS).metrics['reward/errors'] for _ in range(2)] == [1, 1]
    with pytest.warns(RuntimeWarning):
        assert rf(PROMPTS, COMPS, target=TARGETS).metrics['reward/errors'] == 4  # the failed call: 4, not 4 + a stale 1


def test_caller_errors_raise():
    rf = RewardFunctions(TASK.reward)
    with pytest.raises(ValueError, match='prompts has 3 entries but there are 4 completions'):
        rf(PROMPTS[:3], COMPS, target=TARGETS)
    with pytest.raises(ValueError, match="column 'target' must be a list aligned with the 4 completions"):
        rf(PROMPTS, COMPS, target=TARGETS[:2])
    with pytest.raises(ValueError, match='fns\\[0\\] must be a callable'):
        RewardFunctions(['digit_sum'])
    with pytest.raises(ValueError, match='weights must have one entry per reward function \\(2\\), got 1'):
        RewardFunctions([TASK.reward, raising], weights=[1.0])
    assert rf.errors == 0
