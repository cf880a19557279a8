"""Graph: the topological order of a random DAG, by Kahn's algorithm with smallest-index ties.

Edge model (n = size nodes): draw a hidden random order of the nodes; the node at hidden
position i gets each earlier node as a parent independently with probability `edge_prob`, and
if more than `max_in_degree` parents were drawn, a uniformly random `max_in_degree` of them are
kept (fan-in cap). Node ids 0..n-1 are a uniformly random relabelling of the hidden order, so
index order is not topological. An edge u -> v means u precedes v. The number of edges m is at
most E(n) = sum_{i<n} min(i, max_in_degree).

Problem {"num_nodes": n, "edges": [[u, v], ...]}, edges sorted. Tokens: node v -> 2 + v (v <
max_nodes), EDGE ";" -> 2 + max_nodes. Prompt: node(n - 1) (the largest node id, which fixes
n), then "; u v" for every edge in sorted order: 1 + 3m tokens. Answer: the n node ids in Kahn
order, always removing the smallest available id (available = in-degree zero among the nodes not
yet emitted), which makes the order unique. seq_len(n) = 1 + 3 E(n) + n.

Features of answer token t (0-based), the chosen node c:
  num_nodes (structural)      n.
  num_edges (structural)      m.
  in_degree (structural)      in-degree of c in the graph.
  out_degree (structural)     out-degree of c in the graph.
  max_degree (structural)     hub size: max over nodes of in-degree + out-degree.
  frontier_size (execution)   number of available nodes when c is chosen, counting c.
  newly_enabled (execution)   nodes that became available when answer token t - 1 was removed
                              (for t = 0: the number of source nodes).
  depth (execution)           edges on the longest path from any source to c (0 for sources).
"""
import dataclasses

import numpy as np

from anira_jax.tasks.base import NUM_SPECIAL, Example, Task


def max_edges(n: int, max_in_degree: int) -> int:
  """E(n): the most edges a graph of n nodes can get under the fan-in cap."""
  return sum(min(i, max_in_degree) for i in range(n))


def random_dag(rng: np.random.Generator, n: int, edge_prob: float,
               max_in_degree: int) -> list[tuple[int, int]]:
  """Sorted edge list of a random DAG on nodes 0..n-1 (see the module docstring)."""
  label = rng.permutation(n)
  edges = []
  for i in range(1, n):
    parents = np.flatnonzero(rng.random(i) < edge_prob)
    if len(parents) > max_in_degree:
      parents = rng.choice(parents, max_in_degree, replace=False)
    edges += [(int(label[j]), int(label[i])) for j in parents]
  return sorted(edges)


def kahn(n: int, edges: list[tuple[int, int]]) -> tuple[list[int], list[int], list[int]]:
  """(order, frontier_size, newly_enabled), one entry per emitted node."""
  successors = [[] for _ in range(n)]
  in_degree = [0] * n
  for u, v in edges:
    successors[u].append(v)
    in_degree[v] += 1
  available = {v for v in range(n) if in_degree[v] == 0}
  order, frontier, newly = [], [], []
  enabled = len(available)
  for _ in range(n):
    chosen = min(available)
    order.append(chosen)
    frontier.append(len(available))
    newly.append(enabled)
    available.remove(chosen)
    enabled = 0
    for v in successors[chosen]:
      in_degree[v] -= 1
      if in_degree[v] == 0:
        available.add(v)
        enabled += 1
  return order, frontier, newly


def longest_path_depth(order: list[int], edges: list[tuple[int, int]]) -> dict[int, int]:
  """Edges on the longest source-to-v path for every v, given a topological order."""
  parents = {v: [] for v in order}
  for u, v in edges:
    parents[v].append(u)
  depth = {}
  for v in order:
    depth[v] = max((depth[u] + 1 for u in parents[v]), default=0)
  return depth


@dataclasses.dataclass(frozen=True)
class Graph(Task):
  max_nodes: int = 32
  edge_prob: float = 0.3
  max_in_degree: int = 3

  name = "graph"
  min_size = 1
  main_feature = "frontier_size"
  feature_kinds = {"num_nodes": "structural", "num_edges": "structural",
                   "in_degree": "structural", "out_degree": "structural",
                   "max_degree": "structural", "frontier_size": "execution",
                   "newly_enabled": "execution", "depth": "execution"}

  def __post_init__(self):
    if self.max_nodes < 1 or self.max_in_degree < 0 or not 0 <= self.edge_prob <= 1:
      raise ValueError(f"graph needs max_nodes >= 1, max_in_degree >= 0, 0 <= edge_prob <= 1; "
                       f"got {self}")

  @property
  def edge_token(self) -> int:
    return NUM_SPECIAL + self.max_nodes

  @property
  def vocab_size(self) -> int:
    return NUM_SPECIAL + self.max_nodes + 1

  def check_size(self, size: int) -> None:
    super().check_size(size)
    if size > self.max_nodes:
      raise ValueError(f"task 'graph' needs sizes <= max_nodes={self.max_nodes}, got {size}")

  def seq_len(self, size: int) -> int:
    return 1 + 3 * max_edges(size, self.max_in_degree) + size

  def symbol(self, index: int) -> int | str:
    return index if index < self.max_nodes else "->"   # a node, or the edge marker

  def generate(self, rng: np.random.Generator, size: int) -> Example:
    n = size
    edges = random_dag(rng, n, self.edge_prob, self.max_in_degree)
    order, frontier, newly = kahn(n, edges)
    depth = longest_path_depth(order, edges)
    in_degree, out_degree = [0] * n, [0] * n
    for u, v in edges:
      out_degree[u] += 1
      in_degree[v] += 1
    hub = max(i + o for i, o in zip(in_degree, out_degree))
    prompt = [NUM_SPECIAL + n - 1]
    for u, v in edges:
      prompt += [self.edge_token, NUM_SPECIAL + u, NUM_SPECIAL + v]
    return Example(
        problem={"num_nodes": n, "edges": [[u, v] for u, v in edges]},
        answer=order,
        prompt_tokens=prompt,
        answer_tokens=[NUM_SPECIAL + v for v in order],
        features={
            "num_nodes": [n] * n,
            "num_edges": [len(edges)] * n,
            "in_degree": [in_degree[v] for v in order],
            "out_degree": [out_degree[v] for v in order],
            "max_degree": [hub] * n,
            "frontier_size": frontier,
            "newly_enabled": newly,
            "depth": [depth[v] for v in order],
        })
