"""Chase: values and features against a reference that walks the assignments from `problem`."""

import pytest

from anira_jax import tasks
from anira_jax.tasks.base import PAD, SEP

SIZES = (1, 2, 5, 8, 16)


def walk(rhs: dict, q: str, stop: set[str]) -> tuple[str, int]:
  """(where it stops, links followed) from q, stopping at a constant-assigned or stop variable."""
  x, links = q, 0
  while isinstance(rhs[x], str) and x not in stop:
    x, links = rhs[x], links + 1
    assert links <= len(rhs)                       # no cycles
  return x, links


def reference(problem: dict) -> tuple[list[int], dict[str, list[int]]]:
  """Each query resolved in a dict of assignments; fresh hops stop at earlier queries too."""
  rhs = {lhs: r for lhs, r in problem["assignments"]}
  queries = problem["queries"]
  answer, hops, fresh = [], [], []
  for j, q in enumerate(queries):
    end, links = walk(rhs, q, set())
    answer.append(rhs[end])
    hops.append(links)
    fresh.append(walk(rhs, q, set(queries[:j]))[1])
  return answer, {
      "num_vars": [len(rhs)] * len(queries),
      "referenced": [sum(r == q for _, r in problem["assignments"]) for q in queries],
      "hops": hops,
      "fresh_hops": fresh,
  }


def token(task, symbol: str | int) -> int:
  return 2 + task.num_values + int(symbol[1:]) if isinstance(symbol, str) else 2 + symbol


@pytest.mark.parametrize("options", [{}, {"num_vars": 24, "num_values": 3, "const_prob": 0.5},
                                     {"const_prob": 0.0}])
@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("size", SIZES)
def test_answers_and_features_match_reference(size, seed, options):
  task = tasks.get("chase", **options)
  for ex in task.examples(seed, size, 10):
    assignments, queries = ex.problem["assignments"], ex.problem["queries"]
    names = [lhs for lhs, _ in assignments]
    assert len(set(names)) == size and sorted(queries) == sorted(names)
    assert all(0 <= int(v[1:]) < task.num_vars for v in names)
    assert all(r in names if isinstance(r, str) else 0 <= r < task.num_values
               for _, r in assignments)
    answer, features = reference(ex.problem)
    assert ex.answer == answer
    assert ex.features == features
    expected_prompt = [token(task, s) for assignment in assignments for s in assignment]
    expected_prompt += [2 + task.num_values + task.num_vars]
    expected_prompt += [token(task, q) for q in queries]
    assert ex.prompt_tokens == expected_prompt
    assert ex.answer_tokens == [2 + v for v in answer]
    tokens = ex.prompt_tokens + ex.answer_tokens
    assert all(2 <= t < task.vocab_size for t in tokens)
    assert len(tokens) == task.seq_len(size)        # the bound is tight for every example


def test_hand_example_through_encode():
  task = tasks.get("chase")                        # constant c -> 2 + c, v -> 10 + v, QUERY 26
  program = {3: (5, False), 0: (2, False), 7: (0, True), 4: (3, True), 1: (7, True),
             2: (1, True)}
  ex = task.example(program, written=[1, 4, 2, 0, 7, 3], queries=[1, 3, 2, 4, 7, 0])
  assert ex.problem == {
      "assignments": [["v1", "v7"], ["v4", "v3"], ["v2", "v1"], ["v0", 2], ["v7", "v0"],
                      ["v3", 5]],
      "queries": ["v1", "v3", "v2", "v4", "v7", "v0"]}
  # v1 -> v7 -> v0 = 2: 2 hops, nothing queried before.  v3 = 5: 0 hops.
  # v2 -> v1 -> v7 -> v0: 3 hops, but v1 was queried at j = 0, so 1 fresh hop.
  # v4 -> v3 = 5 and v7 -> v0 = 2: 1 hop each.  v0 = 2: 0 hops.
  # Referenced by: v1 (v2), v3 (v4), v7 (v1), v0 (v7); v2 and v4 by nothing.
  expected = {"num_vars": [6] * 6, "referenced": [1, 1, 0, 0, 1, 1],
              "hops": [2, 0, 3, 1, 1, 0], "fresh_hops": [2, 0, 1, 1, 1, 0]}
  assert ex.answer == [2, 5, 2, 5, 2, 2]
  assert ex.features == expected == reference(ex.problem)[1]
  assert ex.prompt_tokens == [11, 17, 14, 13, 12, 11, 10, 4, 17, 10, 13, 7,
                              26, 11, 13, 12, 14, 17, 10]
  arrays = task.encode([ex], task.seq_len(6))
  assert arrays["inputs"].shape == (1, 25)
  assert arrays["inputs"][0, 18:25].tolist() == [10, SEP, 4, 7, 4, 7, 4]   # last query v0
  assert arrays["targets"][0, 18:25].tolist() == [SEP, 4, 7, 4, 7, 4, 4]
  assert arrays["loss_mask"][0].tolist() == [False] * 19 + [True] * 6
  assert arrays["targets"][0, 21] == 4 and arrays["features"]["hops"][0, 21] == 3   # v2's value
  for name, values in expected.items():
    assert arrays["features"][name][0, 19:].tolist() == values
    assert (arrays["features"][name][0, :19] == 0).all()
  assert PAD not in arrays["inputs"][0].tolist()


def refers_forward(assignments: list) -> bool:
  """Some right-hand side is a variable whose own assignment is written later."""
  position = {lhs: i for i, (lhs, _) in enumerate(assignments)}
  return any(isinstance(r, str) and position[r] > i for i, (_, r) in enumerate(assignments))


def test_orders_are_shuffled_and_knobs_act():
  examples = tasks.get("chase").examples(0, 8, 20)
  assert any(refers_forward(ex.problem["assignments"]) for ex in examples)
  assert any(ex.problem["queries"] != [lhs for lhs, _ in ex.problem["assignments"]]
             for ex in examples)
  assert max(max(ex.features["hops"]) for ex in examples) >= 3
  assert any(ex.features["fresh_hops"] != ex.features["hops"] for ex in examples)
  for ex in tasks.get("chase", const_prob=1.0).examples(0, 8, 5):
    assert ex.features["hops"] == ex.features["fresh_hops"] == [0] * 8
  for ex in tasks.get("chase", const_prob=0.0).examples(0, 8, 5):
    constants = [r for _, r in ex.problem["assignments"] if isinstance(r, int)]
    assert len(constants) == 1 and ex.answer == constants * 8


def test_same_seed_same_examples():
  task = tasks.get("chase")
  first, second, other = (task.examples(seed, 6, 5) for seed in (4, 4, 5))
  assert first == second != other


def test_size_limits_and_options():
  task = tasks.get("chase", num_vars=4)
  assert task.vocab_size == 3 + 8 + 4
  assert len(task.examples(0, 4, 3)) == 3
  with pytest.raises(ValueError, match="needs sizes <= num_vars=4, got 5"):
    task.examples(0, 5, 1)
  for bad in ({"num_vars": 0}, {"num_values": 0}, {"const_prob": 1.5}):
    with pytest.raises(ValueError, match="chase needs"):
      tasks.get("chase", **bad)
