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
from typing import NamedTuple, Sequence

import numpy as np

from anira_jax.tasks.base import NUM_SPECIAL, PAD, Drawn, Task


def max_edges(n: int, max_in_degree: int) -> int:
  """E(n): the most edges a graph of n nodes can get under the fan-in cap."""
  return sum(min(i, max_in_degree) for i in range(n))


def random_dags(rng: np.random.Generator, sizes_B: np.ndarray, edge_prob: float,
                max_in_degree: int) -> np.ndarray:
  """edges_BxNxN[b, u, v]: whether row b's random DAG on nodes 0..sizes_B[b]-1 has the edge
  u -> v (see the module docstring)."""
  rows, width = len(sizes_B), int(sizes_B.max())
  i_N = np.arange(width)
  keys_BxN = np.where(i_N < sizes_B[:, None], rng.random((rows, width)), 2.0)
  label_BxN = keys_BxN.argsort(axis=1)       # node id of each hidden position, padding last
  # Hidden position i takes j < i as a parent if u[b, i, j] < edge_prob: the parents are then
  # the smallest draws of the row, in uniformly random order, so keeping the max_in_degree
  # smallest keeps a uniformly random subset of them.
  may_BxNxN = (i_N < i_N[:, None]) & (i_N[:, None] < sizes_B[:, None, None])   # j < i < n
  u_BxNxN = np.where(may_BxNxN, rng.random((rows, width, width)), 2.0)
  rank_BxNxN = u_BxNxN.argsort(axis=2).argsort(axis=2)
  parent_BxNxN = (u_BxNxN < edge_prob) & (rank_BxNxN < max_in_degree)
  edges_BxNxN = np.zeros((rows, width, width), bool)
  edges_BxNxN[np.arange(rows)[:, None, None], label_BxN[:, None, :],
              label_BxN[:, :, None]] = parent_BxNxN
  return edges_BxNxN


class Kahn(NamedTuple):
  """Kahn's algorithm on each row, one column per emitted node (past a row's size: 0)."""
  order_BxN: np.ndarray      # the emitted node
  frontier_BxN: np.ndarray   # frontier_size
  newly_BxN: np.ndarray      # newly_enabled
  depth_BxN: np.ndarray      # depth of the emitted node


def kahn(edges_BxNxN: np.ndarray, sizes_B: np.ndarray) -> Kahn:
  """Kahn's algorithm with smallest-index ties on every row at once."""
  rows, width = edges_BxNxN.shape[:2]
  rows_B = np.arange(rows)
  waiting_BxN = edges_BxNxN.sum(axis=1)             # parents not yet emitted
  done_BxN = np.arange(width) >= sizes_B[:, None]   # padding counts as emitted
  depth_BxN = np.zeros((rows, width), int)
  out = Kahn(*(np.zeros((rows, width), int) for _ in range(4)))
  newly_B = ((waiting_BxN == 0) & ~done_BxN).sum(axis=1)
  for t in range(width):
    live_B = t < sizes_B
    available_BxN = (waiting_BxN == 0) & ~done_BxN
    chosen_B = available_BxN.argmax(axis=1)         # the smallest available id
    children_BxN = edges_BxNxN[rows_B, chosen_B] & live_B[:, None]
    out.order_BxN[:, t] = chosen_B * live_B
    out.frontier_BxN[:, t] = available_BxN.sum(axis=1)
    out.newly_BxN[:, t] = newly_B * live_B
    out.depth_BxN[:, t] = depth_BxN[rows_B, chosen_B] * live_B
    done_BxN[rows_B, chosen_B] |= live_B
    waiting_BxN = waiting_BxN - children_BxN
    newly_B = (children_BxN & (waiting_BxN == 0)).sum(axis=1)
    through_B1 = depth_BxN[rows_B, chosen_B][:, None] + 1   # a child's depth via the chosen
    depth_BxN = np.where(children_BxN, np.maximum(depth_BxN, through_B1), depth_BxN)
  return out


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

  def problem(self, prompt_tokens: Sequence[int]) -> dict:
    symbols = self.decode(prompt_tokens)
    return {"num_nodes": symbols[0] + 1,
            "edges": [list(edge) for edge in zip(symbols[2::3], symbols[3::3])]}

  def draw(self, rng: np.random.Generator, sizes_B: np.ndarray, features: bool) -> Drawn:
    edges_BxNxN = random_dags(rng, sizes_B, self.edge_prob, self.max_in_degree)
    rows, width = edges_BxNxN.shape[:2]
    flat_BxE = edges_BxNxN.reshape(rows, width * width)     # edges in sorted order
    num_edges_B = flat_BxE.sum(axis=1)
    prompt_BxP = np.full((rows, 1 + 3 * num_edges_B.max()), PAD)
    prompt_BxP[:, 0] = NUM_SPECIAL + sizes_B - 1
    b, e = np.nonzero(flat_BxE)
    at = 1 + 3 * (np.cumsum(flat_BxE, axis=1)[b, e] - 1)    # where edge e of row b is written
    prompt_BxP[b, at] = self.edge_token
    prompt_BxP[b, at + 1] = NUM_SPECIAL + e // width
    prompt_BxP[b, at + 2] = NUM_SPECIAL + e % width
    run = kahn(edges_BxNxN, sizes_B)
    real_BxN = np.arange(width) < sizes_B[:, None]
    answer_BxN = np.where(real_BxN, NUM_SPECIAL + run.order_BxN, PAD)
    if not features:
      return Drawn(prompt_BxP, answer_BxN)
    in_BxN, out_BxN = edges_BxNxN.sum(axis=1), edges_BxNxN.sum(axis=2)
    per_token = {
        "num_nodes": sizes_B[:, None],
        "num_edges": num_edges_B[:, None],
        "in_degree": np.take_along_axis(in_BxN, run.order_BxN, 1),
        "out_degree": np.take_along_axis(out_BxN, run.order_BxN, 1),
        "max_degree": (in_BxN + out_BxN).max(axis=1)[:, None],
        "frontier_size": run.frontier_BxN,
        "newly_enabled": run.newly_BxN,
        "depth": run.depth_BxN,
    }
    return Drawn(prompt_BxP, answer_BxN,
                 {k: np.where(real_BxN, v, 0) for k, v in per_token.items()})
