"""Graph: Kahn order and features against a brute-force reference built from `problem`."""
import math

import numpy as np
import pytest

from anira_jax import tasks
from test_tasks_base import mixed_examples

SIZES = (1, 2, 4, 9, 16, 24)


def reference(n: int, edges: list[list[int]]) -> tuple[list[int], dict[str, list[int]]]:
  """Kahn by rescanning every edge each step; depths by memoised DFS over parents."""
  remaining, order, frontiers, newly, previous = set(range(n)), [], [], [], set()
  while remaining:
    available = [v for v in sorted(remaining)
                 if not any(u in remaining and w == v for u, w in edges)]
    newly.append(len(set(available) - previous))
    frontiers.append(len(available))
    order.append(available[0])
    remaining.remove(available[0])
    previous = set(available)

  memo = {}

  def depth(v: int) -> int:
    if v not in memo:
      memo[v] = max((depth(u) + 1 for u, w in edges if w == v), default=0)
    return memo[v]

  degree = lambda v: sum((u == v) + (w == v) for u, w in edges)
  return order, {
      "num_nodes": [n] * n,
      "num_edges": [len(edges)] * n,
      "in_degree": [sum(w == v for _, w in edges) for v in order],
      "out_degree": [sum(u == v for u, _ in edges) for v in order],
      "max_degree": [max(degree(v) for v in range(n))] * n,
      "frontier_size": frontiers,
      "newly_enabled": newly,
      "depth": [depth(v) for v in order],
  }


def check_example(task: tasks.Task, size: int, ex: tasks.Example) -> None:
  n, edges = ex.problem["num_nodes"], ex.problem["edges"]
  assert n == size and edges == sorted(edges)
  assert len({tuple(e) for e in edges}) == len(edges)
  assert all(sum(w == v for _, w in edges) <= task.max_in_degree for v in range(n))
  answer, features = reference(n, edges)
  assert ex.answer == answer
  assert ex.features == features
  position = {v: i for i, v in enumerate(ex.answer)}
  assert sorted(ex.answer) == list(range(n))
  assert all(position[u] < position[v] for u, v in edges)
  expected_prompt = [2 + n - 1]
  for u, v in edges:
    expected_prompt += [2 + task.max_nodes, 2 + u, 2 + v]
  assert ex.prompt_tokens == expected_prompt
  assert ex.answer_tokens == [2 + v for v in answer]


@pytest.mark.parametrize("options", [{}, {"edge_prob": 0.6, "max_in_degree": 5}])
@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("size", SIZES)
def test_answers_and_features_match_reference(size, seed, options):
  task = tasks.get("graph", **options)
  for ex in task.examples(seed, size, 6):
    check_example(task, size, ex)


@pytest.mark.parametrize("options", [{}, {"edge_prob": 0.6, "max_in_degree": 5}])
def test_mixed_sizes_match_reference(options):
  task = tasks.get("graph", **options)
  for size, ex in mixed_examples(task, SIZES, 3, seed=0):
    check_example(task, size, ex)


def test_labels_are_not_topological_and_knobs_act():
  task = tasks.get("graph")
  assert any(ex.answer != sorted(ex.answer) for ex in task.examples(0, 8, 20))
  empty = tasks.get("graph", edge_prob=0.0).examples(0, 6, 3)
  for ex in empty:
    assert ex.problem["edges"] == [] and ex.answer == list(range(6))
    assert ex.features["frontier_size"] == [6, 5, 4, 3, 2, 1]
  complete = tasks.get("graph", edge_prob=1.0, max_in_degree=10)
  for ex in complete.examples(0, 6, 3):
    assert len(ex.problem["edges"]) == 15
    assert ex.features["frontier_size"] == [1] * 6
    assert ex.features["depth"] == list(range(6))
    assert len(ex.prompt_tokens) + len(ex.answer_tokens) == complete.seq_len(6)   # bound is tight


def test_dense_graphs_stay_within_bound_and_size_limits():
  task = tasks.get("graph", edge_prob=0.9, max_in_degree=4)
  for size in SIZES:
    for ex in task.examples(1, size, 50):
      assert len(ex.prompt_tokens) + len(ex.answer_tokens) <= task.seq_len(size)
  with pytest.raises(ValueError):
    task.examples(0, task.max_nodes + 1, 1)
  with pytest.raises(ValueError):
    tasks.get("graph", edge_prob=1.5)


def expected_edges(n: int, p: float, cap: int) -> float:
  """The mean edge count: hidden position i keeps min(Binomial(i, p), cap) parents."""
  return sum(min(k, cap) * math.comb(i, k) * p**k * (1 - p)**(i - k)
             for i in range(n) for k in range(i + 1))


@pytest.mark.parametrize("options", [{}, {"edge_prob": 0.6, "max_in_degree": 2}])
def test_edge_count_fan_in_and_labels_follow_the_edge_model(options):
  task = tasks.get("graph", **options)
  drawn = task.drawn(0, 8, 4000)
  edges_B = drawn.features["num_edges"][:, 0]
  assert abs(edges_B.mean() - expected_edges(8, task.edge_prob, task.max_in_degree)) < 0.15
  assert drawn.features["in_degree"].max() == task.max_in_degree
  # Ids are a uniform relabelling: every id has the same mean in-degree.
  ids, in_degree = drawn.answer_BxA.ravel() - 2, drawn.features["in_degree"].ravel()
  np.testing.assert_allclose(np.bincount(ids, in_degree) / np.bincount(ids),
                             edges_B.mean() / 8, atol=0.06)


def test_fan_in_cap_keeps_a_uniform_subset():
  """Hidden nodes 0 -> 1 always, and node 2 keeps one of its parents 0, 1 at random: a path
  (every out-degree 1) half of the time, node 0 with both as children otherwise."""
  drawn = tasks.get("graph", edge_prob=1.0, max_in_degree=1).drawn(0, 3, 4000)
  assert (drawn.features["num_edges"] == 2).all()
  path = drawn.features["out_degree"].max(axis=1) == 1
  assert abs(path.mean() - 0.5) < 0.03
