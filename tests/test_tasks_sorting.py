"""Sorting against an independent reference, plus one hand-computed encoding."""
import types

import numpy as np
import pytest

from anira_jax import tasks
from test_tasks_base import assert_same_arrays, mixed_examples

SIZES = (1, 2, 5, 12)


def reference(values: list[int]) -> tuple[list[int], dict[str, list[int]]]:
  """Selection sort by repeated scanning, with the features recomputed from scratch."""
  rest, answer = list(values), []
  while rest:
    smallest = rest[0]
    for v in rest:
      smallest = v if v < smallest else smallest
    answer.append(smallest)
    rest.remove(smallest)
  n = len(values)
  features = {"size": [], "multiplicity": [], "remaining": [], "gap": [], "repeat": []}
  for j, v in enumerate(answer):
    features["size"].append(n)
    features["multiplicity"].append(sum(1 for w in values if w == v))
    features["remaining"].append(len(answer) - j)
    features["gap"].append(v - (answer[j - 1] if j else 0))
    features["repeat"].append(sum(1 for w in answer[:j] if w == v))
  return answer, features


def check_example(task: tasks.Task, size: int, ex: tasks.Example) -> None:
  assert len(ex.problem) == size and all(0 <= v < task.num_values for v in ex.problem)
  answer, features = reference(ex.problem)
  assert ex.answer == answer
  assert ex.features == features
  assert ex.prompt_tokens == [v + 2 for v in ex.problem]
  assert ex.answer_tokens == [v + 2 for v in answer]


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("size", SIZES)
def test_answers_and_features_match_reference(seed, size):
  task = tasks.get("sorting", num_values=6)
  for ex in task.examples(seed, size, 20):
    check_example(task, size, ex)


def test_mixed_sizes_match_reference():
  task = tasks.get("sorting", num_values=6)
  for size, ex in mixed_examples(task, SIZES, 5, seed=0):
    check_example(task, size, ex)


def test_hand_computed_encoding():
  """features[name][b, i] describes targets[b, i]; the answer starts at position len(prompt)."""
  task = tasks.get("sorting", num_values=16)
  fixed = types.SimpleNamespace(integers=lambda low, high, shape: np.array([[5, 2, 5]]))
  drawn = task.draw(fixed, np.array([3]), features=True)
  [ex] = task.view(drawn)
  assert (ex.problem, ex.answer) == ([5, 2, 5], [2, 5, 5])
  arrays = task.pack(drawn, 8)
  assert_same_arrays(arrays, task.encode([ex], 8))
  F, T = False, True
  np.testing.assert_array_equal(arrays["inputs"], [[7, 4, 7, 1, 4, 7, 0, 0]])
  np.testing.assert_array_equal(arrays["targets"], [[4, 7, 1, 4, 7, 7, 0, 0]])
  np.testing.assert_array_equal(arrays["loss_mask"], [[F, F, F, T, T, T, F, F]])
  expected = {"size": [0, 0, 0, 3, 3, 3, 0, 0],
              "multiplicity": [0, 0, 0, 1, 2, 2, 0, 0],
              "remaining": [0, 0, 0, 3, 2, 1, 0, 0],
              "gap": [0, 0, 0, 2, 3, 0, 0, 0],
              "repeat": [0, 0, 0, 0, 0, 1, 0, 0]}
  assert set(arrays["features"]) == set(expected)
  for name, row in expected.items():
    np.testing.assert_array_equal(arrays["features"][name], [row], err_msg=name)
  assert task.seq_len(3) == 6


def test_values_are_uniform():
  values = tasks.get("sorting", num_values=6).drawn(0, 5, 2000).prompt_BxP.ravel() - 2
  np.testing.assert_allclose(np.bincount(values) / values.size, 1 / 6, atol=0.01)
