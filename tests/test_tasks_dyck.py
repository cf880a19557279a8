"""Dyck: completions and features against a reference that re-parses the full sequence."""
import collections

import numpy as np
import pytest

from anira_jax import tasks
from test_tasks_base import mixed_examples

SIZES = (1, 2, 3, 8, 20, 60)
SYMBOLS = "()[]{}<>"          # token t <-> SYMBOLS[t - 2]
CLOSER = {"(": ")", "[": "]", "{": "}", "<": ">"}


def reference(prefix: str) -> tuple[list[str], dict[str, list[int]]]:
  """Completion from a stack; features by matching brackets in prefix + completion."""
  stack, deepest = [], 0
  for ch in prefix:
    if ch in CLOSER:
      stack.append(ch)
      deepest = max(deepest, len(stack))
    else:
      assert CLOSER[stack.pop()] == ch
  answer = [CLOSER[ch] for ch in reversed(stack)]
  full, openers, distance, depth_before = prefix + "".join(answer), [], {}, {}
  for position, ch in enumerate(full):
    if ch in CLOSER:
      openers.append(position)
    else:
      depth_before[position] = len(openers)
      distance[position] = position - openers.pop()
  assert not openers
  n, d = len(prefix), len(answer)
  return answer, {
      "length": [n] * d,
      "num_open": [d] * d,
      "prefix_depth": [deepest] * d,
      "pair": ["()[]{}<>".index(ch) // 2 for ch in answer],
      "stack_depth": [depth_before[n + j] for j in range(d)],
      "match_distance": [distance[n + j] for j in range(d)],
  }


def check_example(task: tasks.Task, size: int, ex: tasks.Example) -> None:
  assert len(ex.problem) == size and set(ex.problem) <= set(SYMBOLS[:2 * task.k])
  answer, features = reference(ex.problem)
  assert 1 <= len(answer) <= task.max_depth
  assert max(features["prefix_depth"]) <= task.max_depth
  assert ex.answer == answer
  assert ex.features == features
  assert ex.prompt_tokens == [2 + SYMBOLS.index(ch) for ch in ex.problem]
  assert ex.answer_tokens == [2 + SYMBOLS.index(ch) for ch in answer]


@pytest.mark.parametrize("options", [{}, {"k": 4, "max_depth": 3}, {"k": 1, "open_prob": 0.8}])
@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("size", SIZES)
def test_answers_and_features_match_reference(size, seed, options):
  task = tasks.get("dyck", **options)
  for ex in task.examples(seed, size, 20):
    check_example(task, size, ex)


@pytest.mark.parametrize("options", [{}, {"k": 4, "max_depth": 3}, {"k": 1, "open_prob": 0.8}])
def test_mixed_sizes_match_reference(options):
  task = tasks.get("dyck", **options)
  for size, ex in mixed_examples(task, SIZES, 3, seed=0):
    check_example(task, size, ex)


def test_all_pairs_used_and_vocab():
  task = tasks.get("dyck", k=4)
  assert task.vocab_size == 10
  assert set("".join(ex.problem for ex in task.examples(0, 30, 10))) == set(SYMBOLS)
  with pytest.raises(ValueError):
    tasks.get("dyck", k=5)


def test_walks_are_conditioned_on_ending_open():
  """Length 4, one pair: the walks ((((, ((() and (()( have probability 1/8 each, ()(( 1/4, and
  (()) and ()() (1/8 and 1/4) end closed and are redrawn: 1/5, 1/5, 1/5, 2/5."""
  counts = collections.Counter(ex.problem for ex in tasks.get("dyck", k=1).examples(0, 4, 4000))
  assert set(counts) == {"((((", "((()", "(()(", "()(("}
  np.testing.assert_allclose([counts[w] / 4000 for w in ("((((", "((()", "(()(", "()((")],
                             [0.2, 0.2, 0.2, 0.4], atol=0.03)


def test_max_depth_forces_a_close_and_pairs_are_uniform():
  capped = tasks.get("dyck", k=1, max_depth=2, open_prob=1.0)
  assert {ex.problem for ex in capped.examples(0, 6, 50)} == {"(()()("}
  openers = collections.Counter(ex.problem for ex in tasks.get("dyck", k=4).examples(0, 1, 4000))
  np.testing.assert_allclose([openers[c] / 4000 for c in "([{<"], 0.25, atol=0.03)
