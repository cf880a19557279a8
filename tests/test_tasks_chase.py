"""Chase: value and features against a reference that walks the assignments from `problem`."""
import collections

import numpy as np
import pytest

from anira_jax import tasks
from anira_jax.tasks.base import SEP
from test_tasks_base import assert_same_arrays, mixed_examples

SIZES = (1, 2, 5, 8, 16)
OPTIONS = [{}, {"num_vars": 30, "num_values": 3, "num_chains": 3}, {"num_chains": 1}]


def walk(rhs: dict, q: str) -> list[str]:
  """q and the variables followed from it up to the one assigned a constant."""
  path = [q]
  while isinstance(rhs[path[-1]], str):
    path.append(rhs[path[-1]])
    assert len(path) <= len(rhs)                   # no cycles
  return path


def reference(problem: dict) -> tuple[list[int], dict[str, list[int]]]:
  """The query resolved in a dict of assignments."""
  rhs = dict(problem["assignments"])
  path = walk(rhs, problem["query"])
  return [rhs[path[-1]]], {
      "num_vars": [len(rhs)],
      "referenced": [sum(r == problem["query"] for r in rhs.values())],
      "hops": [len(path) - 1],
  }


def chain_sizes(problem: dict) -> dict[int, int]:
  """Variables whose value is each constant."""
  rhs = dict(problem["assignments"])
  return collections.Counter(rhs[walk(rhs, v)[-1]] for v in rhs)


def token(task, symbol: str | int) -> int:
  return 2 + task.num_values + int(symbol[1:]) if isinstance(symbol, str) else 2 + symbol


def check_example(task: tasks.Task, size: int, ex: tasks.Example) -> None:
  assignments, query = ex.problem["assignments"], ex.problem["query"]
  names = [lhs for lhs, _ in assignments]
  assert len(set(names)) == size and query in names
  assert all(0 <= int(v[1:]) < task.num_vars for v in names)
  assert all(r in names if isinstance(r, str) else 0 <= r < task.num_values
             for _, r in assignments)
  answer, features = reference(ex.problem)
  assert ex.answer == answer and ex.features == features
  expected_prompt = [token(task, s) for assignment in assignments for s in assignment]
  expected_prompt += [2 + task.num_values + task.num_vars, token(task, query)]
  assert ex.prompt_tokens == expected_prompt
  assert ex.answer_tokens == [2 + answer[0]]
  assert all(2 <= t < task.vocab_size for t in ex.prompt_tokens + ex.answer_tokens)
  assert len(ex.prompt_tokens) + len(ex.answer_tokens) == task.seq_len(size)   # tight bound


@pytest.mark.parametrize("options", OPTIONS)
@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("size", SIZES)
def test_answer_features_and_tokens_match_reference(size, seed, options):
  task = tasks.get("chase", **options)
  for ex in task.examples(seed, size, 20):
    check_example(task, size, ex)


def check_chains(task: tasks.Task, size: int, ex: tasks.Example) -> None:
  """min(num_chains, size) disjoint chains, lengths within one, distinct constants."""
  rhs = dict(ex.problem["assignments"])
  constants = [r for r in rhs.values() if isinstance(r, int)]
  assert len(constants) == len(set(constants)) == min(task.num_chains, size)
  sizes = chain_sizes(ex.problem)
  assert sorted(sizes) == sorted(constants)
  assert max(sizes.values()) - min(sizes.values()) <= 1
  referenced = collections.Counter(r for r in rhs.values() if isinstance(r, str))
  assert max(referenced.values(), default=1) == 1          # chains, not trees
  assert ex.features["hops"][0] < sizes[ex.answer[0]]


@pytest.mark.parametrize("options", OPTIONS)
def test_mixed_sizes_match_reference(options):
  task = tasks.get("chase", **options)
  for size, ex in mixed_examples(task, SIZES, 4, seed=0):
    check_example(task, size, ex)
    check_chains(task, size, ex)


@pytest.mark.parametrize("options", OPTIONS)
@pytest.mark.parametrize("size", SIZES)
def test_chains_are_disjoint_balanced_with_distinct_constants(size, options):
  task = tasks.get("chase", **options)
  for ex in task.examples(2, size, 30):
    check_chains(task, size, ex)


def test_names_and_constants_are_uniform():
  """Every name of the pool and every constant is as likely as any other."""
  task = tasks.get("chase", num_vars=6, num_values=4, num_chains=2)
  examples = task.examples(0, 3, 3000)
  names = collections.Counter(lhs for ex in examples for lhs, _ in ex.problem["assignments"])
  constants = collections.Counter(r for ex in examples for _, r in ex.problem["assignments"]
                                  if isinstance(r, int))
  assert sorted(names) == [f"v{v}" for v in range(6)]
  np.testing.assert_allclose([names[f"v{v}"] / 9000 for v in range(6)], 1 / 6, atol=0.02)
  np.testing.assert_allclose([constants[c] / 6000 for c in range(4)], 1 / 4, atol=0.02)


def hand_example(task, query: int):
  """The program v3 = 5, v7 = v3, v1 = v7, v2 = v1 and v0 = 2, v4 = v0, v5 = v4, written in the
  order v1 v4 v2 v0 v7 v5 v3, asking for `query`."""
  names = [3, 0, 7, 4, 1, 5, 2]   # dealing order: chain 0 is names 0, 2, 4, 6, chain 1 the rest
  written = [names.index(v) for v in (1, 4, 2, 0, 7, 5, 3)]
  return task.program(np.array([7]), np.array([names]), np.array([[5, 2]]), np.array([written]),
                      np.array([names.index(query)]), features=True)


def test_hand_example_through_encode():
  task = tasks.get("chase")                        # constant c -> 2 + c, v -> 10 + v, QUERY 34
  drawn = hand_example(task, query=1)
  [ex] = task.view(drawn)
  assert ex.problem == {
      "assignments": [["v1", "v7"], ["v4", "v0"], ["v2", "v1"], ["v0", 2], ["v7", "v3"],
                      ["v5", "v4"], ["v3", 5]],
      "query": "v1"}
  # v1 -> v7 -> v3 = 5: 2 hops; v2 is assigned v1, so v1 is referenced once.
  expected = {"num_vars": [7], "referenced": [1], "hops": [2]}
  assert ex.answer == [5] and ex.answer_tokens == [7]
  assert ex.features == expected == reference(ex.problem)[1]
  assert ex.prompt_tokens == [11, 17, 14, 10, 12, 11, 10, 4, 17, 13, 15, 14, 13, 7, 34, 11]
  arrays = task.pack(drawn, task.seq_len(7))
  assert_same_arrays(arrays, task.encode([ex], task.seq_len(7)))
  assert arrays["inputs"][0].tolist() == ex.prompt_tokens + [SEP]
  assert arrays["targets"][0].tolist() == ex.prompt_tokens[1:] + [SEP, 7]
  assert arrays["loss_mask"][0].tolist() == [False] * 16 + [True]
  for name, values in expected.items():
    assert arrays["features"][name][0].tolist() == [0] * 16 + values
  assert chain_sizes(ex.problem) == {5: 4, 2: 3}
  for q, hops in ((3, 0), (2, 3), (0, 0), (5, 2)):
    assert task.view(hand_example(task, q))[0].features["hops"] == [hops]


def test_hops_are_uniform_over_the_chain_and_the_answer_is_not_guessable():
  task = tasks.get("chase")
  examples = task.examples(0, 8, 4000)             # 2 chains of 4 variables
  hops = np.array([ex.features["hops"][0] for ex in examples])
  np.testing.assert_allclose(np.bincount(hops) / hops.size, [0.25] * 4, atol=0.03)
  first_constant = [next(r for _, r in ex.problem["assignments"] if isinstance(r, int))
                    for ex in examples]
  agree = np.mean([ex.answer[0] == c for ex, c in zip(examples, first_constant)])
  assert abs(agree - 0.5) < 0.03                   # either constant is the answer half the time
  longest = max(ex.features["hops"][0] for ex in task.examples(0, 16, 200))
  assert longest == 7
  three = tasks.get("chase", num_chains=3).examples(0, 9, 600)
  assert {ex.features["hops"][0] for ex in three} == {0, 1, 2}


def test_assignments_are_shuffled():
  examples = tasks.get("chase").examples(0, 8, 20)
  position = lambda ex: {lhs: i for i, (lhs, _) in enumerate(ex.problem["assignments"])}
  forward = [any(isinstance(r, str) and position(ex)[r] > i
                 for i, (_, r) in enumerate(ex.problem["assignments"])) for ex in examples]
  backward = [any(isinstance(r, str) and position(ex)[r] < i
                  for i, (_, r) in enumerate(ex.problem["assignments"])) for ex in examples]
  assert any(forward) and any(backward)


def test_single_chain_and_single_variable():
  for ex in tasks.get("chase", num_chains=1).examples(0, 6, 10):
    constants = [r for _, r in ex.problem["assignments"] if isinstance(r, int)]
    assert len(constants) == 1 and ex.answer == constants
  for ex in tasks.get("chase").examples(0, 1, 5):
    assert ex.features == {"num_vars": [1], "referenced": [0], "hops": [0]}


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
  for bad in ({"num_vars": 0}, {"num_chains": 0}, {"num_values": 2, "num_chains": 3}):
    with pytest.raises(ValueError, match="chase needs"):
      tasks.get("chase", **bad)
