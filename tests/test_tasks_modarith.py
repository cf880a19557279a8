"""ModArith: values and features against a shunting-yard parse and a postfix stack machine."""

import pytest

from anira_jax import tasks

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


@pytest.mark.parametrize("options", [{}, {"modulus": 13, "ops": "+*"}, {"modulus": 2, "ops": "-"}])
@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("size", SIZES)
def test_answers_and_features_match_reference(size, seed, options):
  task = tasks.get("modarith", **options)
  p = task.modulus
  for ex in task.examples(seed, size, 10):
    symbols = ex.problem.split(" ")
    assert set(s for s in symbols if not s.isdigit()) <= set(task.ops + "()")
    assert all(int(s) < p for s in symbols if s.isdigit())
    answer, features = reference(ex.problem, p)
    assert len(answer) == size
    assert ex.answer == answer
    assert ex.features == features
    vocab = {str(v): 2 + v for v in range(p)} | {s: 2 + p + i for i, s in enumerate("+-*()")}
    assert ex.prompt_tokens == [vocab[s] for s in symbols]
    assert ex.answer_tokens == [2 + v for v in answer]


def test_nesting_occurs_and_bound_is_tight():
  task = tasks.get("modarith")
  depths = [d for ex in task.examples(0, 20, 50) for d in ex.features["stack_depth"]]
  assert max(depths) >= 4 and min(depths) == 2
  # A right chain 0-(0-(0-...)) reaches seq_len exactly: n + 1 numbers, n ops, n - 1 brackets.
  n = 5
  assert len("0 - ( 0 - ( 0 - ( 0 - ( 0 - 0 ) ) ) )".split()) + n == task.seq_len(n)
