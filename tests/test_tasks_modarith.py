"""ModArith: values and features against a shunting-yard parse and a postfix stack machine."""
import collections

import numpy as np
import pytest

from anira_jax import tasks
from anira_jax.tasks import modarith
from test_tasks_base import mixed_examples

SIZES = (1, 2, 3, 7, 20, 50)


def reference(problem: str, modulus: int) -> tuple[list[int], dict[str, list[int]]]:
  """Infix (no precedence, left associative) -> postfix -> evaluation with an explicit stack."""
  symbols, postfix, pending, depth = problem.split(" "), [], [], 0
  for position, s in enumerate(symbols):
    if s.isdigit():
      postfix.append((s, position))
    elif s == "(":
      pending.append((s, position))
    elif s == ")":
      while pending[-1][0] != "(":
        postfix.append(pending.pop())
      pending.pop()
    else:
      while pending and pending[-1][0] != "(":
        postfix.append(pending.pop())
      pending.append((s, position))
  postfix += pending[::-1]
  bracket_depth = []            # bracket depth of every symbol
  for s in symbols:
    depth += (s == "(") - (s == ")")
    bracket_depth.append(depth)
  stack, answer = [], []        # stack entries: (value, operators below, answer index or None)
  features = {k: [] for k in ("num_ops", "subtree_ops", "operator", "stack_depth", "reach")}
  for s, position in postfix:
    if s.isdigit():
      stack.append((int(s), 0, None))
      continue
    features["stack_depth"].append(len(stack))
    assert len(stack) == 2 + bracket_depth[position]
    (x, x_ops, x_at), (y, y_ops, y_at) = stack[-2], stack[-1]
    del stack[-2:]
    value = {"+": x + y, "-": x - y, "*": x * y}[s] % modulus
    j = len(answer)
    features["subtree_ops"].append(x_ops + y_ops + 1)
    features["operator"].append("+-*".index(s))
    features["reach"].append(j - x_at if x_at is not None else 1 if y_at is not None else 0)
    answer.append(value)
    stack.append((value, x_ops + y_ops + 1, j))
  assert len(stack) == 1 and stack[0][0] == answer[-1]
  features["num_ops"] = [len(answer)] * len(answer)
  return answer, features


def check_example(task: tasks.Task, size: int, ex: tasks.Example) -> None:
  p, symbols = task.modulus, ex.problem.split(" ")
  assert set(s for s in symbols if not s.isdigit()) <= set(task.ops + "()")
  assert all(int(s) < p for s in symbols if s.isdigit())
  answer, features = reference(ex.problem, p)
  assert len(answer) == size
  assert ex.answer == answer
  assert ex.features == features
  vocab = {str(v): 2 + v for v in range(p)} | {s: 2 + p + i for i, s in enumerate("+-*()")}
  assert ex.prompt_tokens == [vocab[s] for s in symbols]
  assert ex.answer_tokens == [2 + v for v in answer]


@pytest.mark.parametrize("options", [{}, {"modulus": 13, "ops": "+*"}, {"modulus": 2, "ops": "-"}])
@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("size", SIZES)
def test_answers_and_features_match_reference(size, seed, options):
  task = tasks.get("modarith", **options)
  for ex in task.examples(seed, size, 10):
    check_example(task, size, ex)


@pytest.mark.parametrize("options", [{}, {"modulus": 13, "ops": "+*"}, {"modulus": 2, "ops": "-"}])
def test_mixed_sizes_match_reference(options):
  task = tasks.get("modarith", **options)
  for size, ex in mixed_examples(task, SIZES, 3, seed=0):
    check_example(task, size, ex)


def test_nesting_occurs_and_bound_is_tight():
  task = tasks.get("modarith")
  depths = [d for ex in task.examples(0, 20, 50) for d in ex.features["stack_depth"]]
  assert max(depths) >= 4 and min(depths) == 2
  # A right chain 0-(0-(0-...)) reaches seq_len exactly: n + 1 numbers, n ops, n - 1 brackets.
  n = 5
  assert len("0 - ( 0 - ( 0 - ( 0 - ( 0 - 0 ) ) ) )".split()) + n == task.seq_len(n)


def test_splits_operators_and_leaves_are_uniform():
  trees = modarith.random_trees(np.random.default_rng(0), np.full(4000, 4), 5, "+-")
  left_ops = np.bincount(trees.ops_BxT[:, 1], minlength=4) / 4000   # the root's left operand
  np.testing.assert_allclose(left_ops, 0.25, atol=0.03)
  symbols = collections.Counter(s for ex in tasks.get("modarith", modulus=5, ops="+-").examples(
      0, 4, 1000) for s in ex.problem.split(" "))
  np.testing.assert_allclose([symbols[s] / 4000 for s in "+-"], 0.5, atol=0.03)
  np.testing.assert_allclose([symbols[str(v)] / 5000 for v in range(5)], 0.2, atol=0.02)
