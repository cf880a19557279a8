"""Dyck: completions and features against a reference that re-parses the full sequence."""
import pathlib
import sys

import numpy as np
import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
from anira_jax import tasks  # noqa: E402
from anira_jax.tasks.base import PAD, SEP  # noqa: E402

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


@pytest.mark.parametrize("size", SIZES)
def test_sample_arrays(size):
  task = tasks.get("dyck")
  batch, length = 8, task.seq_len(size)
  arrays = task.sample(3, size, batch)
  examples = task.examples(3, size, batch)
  assert arrays["inputs"].shape == arrays["targets"].shape == (batch, length)
  assert arrays["inputs"].dtype == arrays["targets"].dtype == np.int32
  assert arrays["loss_mask"].shape == (batch, length) and arrays["loss_mask"].dtype == bool
  assert arrays["inputs"].max() < task.vocab_size and arrays["targets"].max() < task.vocab_size
  for b, ex in enumerate(examples):
    start, mask = len(ex.prompt_tokens), arrays["loss_mask"][b]
    assert np.flatnonzero(mask).tolist() == list(range(start, start + len(ex.answer)))
    assert [SYMBOLS[t - 2] for t in arrays["targets"][b][mask]] == ex.answer
    assert arrays["inputs"][b, start] == SEP
    assert (arrays["inputs"][b, start + len(ex.answer):] == PAD).all()
    for name, values in arrays["features"].items():
      assert values.shape == (batch, length) and values.dtype == np.float32
      assert (values[b][~mask] == 0).all()
      assert values[b][mask].tolist() == ex.features[name]


def test_determinism_and_seq_len_bound():
  task = tasks.get("dyck")
  a, b, c = task.sample(5, 10, 4), task.sample(5, 10, 4), task.sample(6, 10, 4)
  np.testing.assert_array_equal(a["inputs"], b["inputs"])
  assert not np.array_equal(a["inputs"], c["inputs"])
  for options in ({}, {"max_depth": 4, "open_prob": 0.9}):
    task = tasks.get("dyck", **options)
    for size in SIZES:
      for ex in task.examples(1, size, 100):
        assert len(ex.prompt_tokens) + len(ex.answer_tokens) <= task.seq_len(size)
