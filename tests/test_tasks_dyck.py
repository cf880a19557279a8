"""Dyck: completions and features against a reference that re-parses the full sequence."""

import pytest

from anira_jax import tasks

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


@pytest.mark.parametrize("options", [{}, {"k": 4, "max_depth": 3}, {"k": 1, "open_prob": 0.8}])
@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("size", SIZES)
def test_answers_and_features_match_reference(size, seed, options):
  task = tasks.get("dyck", **options)
  for ex in task.examples(seed, size, 20):
    assert len(ex.problem) == size and set(ex.problem) <= set(SYMBOLS[:2 * task.k])
    answer, features = reference(ex.problem)
    assert 1 <= len(answer) <= task.max_depth
    assert max(features["prefix_depth"]) <= task.max_depth
    assert ex.answer == answer
    assert ex.features == features
    assert ex.prompt_tokens == [2 + SYMBOLS.index(ch) for ch in ex.problem]
    assert ex.answer_tokens == [2 + SYMBOLS.index(ch) for ch in answer]


def test_all_pairs_used_and_vocab():
  task = tasks.get("dyck", k=4)
  assert task.vocab_size == 10
  assert set("".join(ex.problem for ex in task.examples(0, 30, 10))) == set(SYMBOLS)
  with pytest.raises(ValueError):
    tasks.get("dyck", k=5)
