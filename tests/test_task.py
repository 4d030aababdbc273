"""flowrl_nb.task: the digit-sum task against brute force; the shared column check of the reward functions."""
import itertools, math, warnings

import pytest
from hypothesis import given, settings, strategies as st

from flowrl_nb.task import DigitSumTask, task_from_config
from flowrl_nb.rewards import aligned_column


def brute_force_correct(t, max_digits):
    "Every string over 0-9 of length 1..max_digits, filtered by digit sum (no cleverness)."
    return [''.join(p) for n in range(1, max_digits + 1) for p in itertools.product('0123456789', repeat=n)
            if sum(map(int, p)) == t]


@pytest.mark.parametrize('max_digits', [1, 2, 3, 4])
def test_correct_set_matches_brute_force(max_digits):
    task = DigitSumTask(min_target=1, max_target=min(18, 9 * max_digits), max_digits=max_digits)
    for t in task.targets:
        expect = brute_force_correct(t, max_digits)
        got = task.correct_completions(t)
        assert sorted(got) == sorted(expect) and len(set(got)) == len(got)
        assert task.num_correct(t) == len(expect)
        assert all(task.is_correct(t, c) for c in got)


def test_default_task_counts():
    task = DigitSumTask()
    assert len(task.rows()) == 14
    assert [task.num_correct(t) for t in (5, 9, 13, 18)] == [28, 66, 81, 56]
    assert sum(1 for n in range(1, 4) for _ in itertools.product('0123456789', repeat=n)) == 1110  # well-formed space


def test_reward_is_exactly_is_correct_over_the_whole_space():
    task = DigitSumTask()
    space = [''.join(p) for n in range(0, 5) for p in itertools.product('0123456789S', repeat=n)]
    for t in (5, 13, 18):
        r = task.reward(completions=space, target=[t] * len(space))
        assert r == [float(c != '' and len(c) <= 3 and c.isdigit() and sum(map(int, c)) == t) for c in space]


def test_partial_credit():
    task = DigitSumTask(partial_credit=True)
    comps = ['94', '93', '9', '0', '995', '999', '99999', '9a', '', ' 4']
    assert task.reward(completions=comps, target=[13] * len(comps)) == pytest.approx(
        [1.0, 1 - 1 / 13, 1 - 4 / 13, 0.0, 1 - 10 / 13, 0.0, 0.0, 0.0, 0.0, 0.0])  # '999': |27-13|/13 > 1 -> clipped
    assert not task.is_correct(13, '93')


@settings(max_examples=200, deadline=None)
@given(t=st.integers(5, 18), c=st.text(alphabet='0123456789x ', max_size=5))
def test_partial_credit_bounds(t, c):
    exact, pc = DigitSumTask(), DigitSumTask(partial_credit=True)
    r = pc.score(t, c)
    assert 0.0 <= r <= 1.0
    assert (r == 1.0) == exact.is_correct(t, c) == (exact.score(t, c) == 1.0)
    if not exact.is_well_formed(c): assert r == 0.0


def test_rows_seeded_and_config():
    task = DigitSumTask()
    assert task.rows(8, seed=3) == task.rows(8, seed=3)
    assert {r['target'] for r in task.rows(500, seed=0)} == set(task.targets)
    assert all(r['prompt'] == f"S={r['target']}:" for r in task.rows(20, seed=1))
    t = task_from_config({'task': 'digit-sum', 'task_max_target': 9, 'task_max_digits': 1})
    assert (t.targets, t.max_digits) == (list(range(5, 10)), 1)
    with pytest.raises(ValueError, match='max_target must be ≤ 9·max_digits = 9'):
        task_from_config({'task_max_digits': 1})


def test_aligned_column():
    assert aligned_column({'answer': ('a', 'b'), 'x': 1}, 'answer', 2, 'math') == ['a', 'b']
    with pytest.raises(ValueError, match=r"the math reward needs the gold answer column 'answer', got columns \['target'\]; "
                                         r"add it to the dataset rows or pass answer_column= to read another one"):
        aligned_column({'target': [1]}, 'answer', 1, 'math', 'gold answer', 'answer_column')
    with pytest.raises(ValueError, match=r"needs the column 'tests', got columns \[\]; add it to the dataset rows$"):
        aligned_column({}, 'tests', 1, 'code')
    with pytest.raises(ValueError, match="the code reward: column 'tests' must be a list aligned with the 3 completions, "
                                         "got list of length 2; give every completion its row's entry"):
        aligned_column({'tests': [[], []]}, 'tests', 3, 'code')
    for bad, got in (('12', 'str of length 2'), (b'12', 'bytes of length 2'), (7, 'int;')):
        with pytest.raises(ValueError, match=got): aligned_column({'c': bad}, 'c', 2, 'r')
    with pytest.raises(ValueError, match="the digit_sum reward: column 'target' must be a list aligned with the 4 completions"):
        DigitSumTask().reward(completions=['5', '94', '7', '16'], target=[5, 13, 6])
