"""Addition: digits and carry features against a reference computed from the integers."""

import numpy as np
import pytest

from anira_jax import tasks
from test_tasks_base import mixed_examples

SIZES = (1, 2, 5, 12, 40)


def digit(x: int, i: int) -> int:
  return x // 10**i % 10


def reference(a: int, b: int, n: int, lsb_first: bool) -> tuple[list[int], dict[str, list[int]]]:
  """Per position i: carry in from the low parts of a and b; runs and lookahead by scanning."""
  carry = lambda i: int(a % 10**i + b % 10**i >= 10**i)
  pair = lambda i: digit(a, i) + digit(b, i)
  positions = list(range(n + 1)) if lsb_first else list(range(n, -1, -1))
  chain, lookahead = {}, {}
  for i in range(n + 1):
    chain[i] = 0
    while chain[i] < i and carry(i - chain[i]):
      chain[i] += 1
    lookahead[i] = next((d for d in range(1, i + 1) if pair(i - d) != 9), i)
  return [digit(a + b, i) for i in positions], {
      "num_digits": [n] * (n + 1),
      "position": positions,
      "pair_sum": [pair(i) for i in positions],
      "carry": [carry(i) for i in positions],
      "carry_chain": [chain[i] for i in positions],
      "lookahead": [lookahead[i] for i in positions],
  }


def check_example(task: tasks.Task, size: int, ex: tasks.Example) -> None:
  a, b = ex.problem
  assert type(a) is int and 0 <= a < 10**size and 0 <= b < 10**size
  answer, features = reference(a, b, size, task.lsb_first)
  assert ex.answer == answer
  assert ex.features == features
  order = range(size) if task.lsb_first else range(size - 1, -1, -1)
  expected_prompt = [2 + digit(a, i) for i in order] + [12] + [2 + digit(b, i) for i in order]
  assert ex.prompt_tokens == expected_prompt
  assert ex.answer_tokens == [2 + d for d in answer]


@pytest.mark.parametrize("lsb_first", [False, True])
@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("size", SIZES)
def test_answers_and_features_match_reference(size, seed, lsb_first):
  task = tasks.get("addition", lsb_first=lsb_first)
  for ex in task.examples(seed, size, 20):
    check_example(task, size, ex)


@pytest.mark.parametrize("lsb_first", [False, True])
def test_mixed_sizes_match_reference(lsb_first):
  task = tasks.get("addition", lsb_first=lsb_first)
  for size, ex in mixed_examples(task, SIZES, 4, seed=0):
    check_example(task, size, ex)


def test_long_carry_chains_occur():
  task = tasks.get("addition")
  chains = [c for ex in task.examples(0, 30, 200) for c in ex.features["carry_chain"]]
  assert max(chains) >= 4 and min(chains) == 0


def test_digits_are_uniform_and_carries_as_likely_as_expected():
  drawn = tasks.get("addition", lsb_first=True).drawn(0, 5, 2000)
  digits = np.concatenate([drawn.prompt_BxP[:, :5], drawn.prompt_BxP[:, 6:]]).ravel() - 2
  np.testing.assert_allclose(np.bincount(digits) / digits.size, 0.1, atol=0.01)
  assert abs(drawn.features["carry"][:, 1].mean() - 0.45) < 0.03   # P(a_0 + b_0 >= 10)
