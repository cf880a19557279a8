"""Chase: the value of one queried variable of a program of assignments, by following references.

Program (n = size variables, c = min(num_chains, n) chains): n distinct names drawn uniformly
from the pool 0..num_vars-1 in a uniformly random order and dealt round-robin into c chains, so
chain k holds names k, k + c, k + 2c, ... of that order and chain lengths differ by at most one.
The first name of a chain (its root) is assigned a constant; every later one is assigned the name
before it. The c constants are distinct, drawn uniformly from 0..num_values-1. The assignments
are written in a uniformly random order, so the prompt order is not the chain order; the queried
variable q is uniform among the n names.

Why one query, distinct constants and balanced chains: the value of q is the constant of q's
chain, and every chain ends at a different constant, so without following references the best
guess is right about 1/c of the time. With one query per example the answer cannot reuse an
earlier answer or be found by matching its position in a list of queries. Chains of nearly
equal length keep the cheapest alternative to following q's links (ruling out the other chains,
which takes their length) about as long as q's own chain: with random chain lengths, a long hop
count would leave the other chains short and easy to rule out. A query uniform among the
variables of a chain of L variables makes the hop count uniform over 0..L-1; c chains of n
variables reach hops up to ceil(n / c) - 1.

Problem {"assignments": [["v3", "v7"], ["v7", 5], ...], "query": "v3"}, with variable v written
"v<v>" and constants as ints. Answer: the value of q (one token). Tokens: constant c -> 2 + c,
variable v -> 2 + num_values + v, QUERY -> 2 + num_values + num_vars; vocab_size =
3 + num_values + num_vars. Prompt: "lhs rhs" for every assignment in prompt order, then QUERY q:
2n + 2 tokens. seq_len(n) = 2n + 3, reached by every example.

Chain of q: q = x_0, x_1, ..., x_h where x_{k+1} is the right-hand side of x_k and x_h is
assigned a constant (the value of q). Features of the answer token:
  num_vars (structural)     n.
  referenced (structural)   assignments whose right-hand side is q (0 for the last of a chain).
  hops (execution)          h: links followed from q to a constant (0 if q is assigned one).
"""
import dataclasses
from typing import Sequence

import numpy as np

from anira_jax.tasks.base import NUM_SPECIAL, PAD, Drawn, Task


def distinct(rng: np.random.Generator, rows: int, pool: int, width: int) -> np.ndarray:
  """[rows, width]: per row, distinct values uniform from 0..pool-1, in uniformly random order
  (so the first k of a row are k distinct values in random order, for every k <= width)."""
  return rng.random((rows, pool)).argsort(axis=1)[:, :width]


def shuffled(rng: np.random.Generator, sizes_B: np.ndarray) -> np.ndarray:
  """[B, max size]: per row, a uniformly random permutation of 0..size-1 first, then the rest."""
  keys_BxN = rng.random((len(sizes_B), sizes_B.max()))
  return np.where(np.arange(sizes_B.max()) < sizes_B[:, None], keys_BxN, 2.0).argsort(axis=1)


def text(value: int, is_variable: bool) -> str | int:
  """A right-hand side as the problem writes it: "v<value>" for a variable, else the int."""
  return f"v{value}" if is_variable else value


@dataclasses.dataclass(frozen=True)
class Chase(Task):
  num_vars: int = 24
  num_values: int = 8
  num_chains: int = 2

  name = "chase"
  min_size = 1
  main_feature = "hops"
  feature_kinds = {"num_vars": "structural", "referenced": "structural", "hops": "execution"}

  def __post_init__(self):
    if self.num_vars < 1 or not 1 <= self.num_chains <= self.num_values:
      raise ValueError(f"chase needs num_vars >= 1 and 1 <= num_chains <= num_values (distinct "
                       f"constants); got {self}")

  @property
  def query_token(self) -> int:
    return NUM_SPECIAL + self.num_values + self.num_vars

  @property
  def vocab_size(self) -> int:
    return NUM_SPECIAL + self.num_values + self.num_vars + 1

  def check_size(self, size: int) -> None:
    super().check_size(size)
    if size > self.num_vars:
      raise ValueError(f"task 'chase' needs sizes <= num_vars={self.num_vars}, got {size}")

  def seq_len(self, size: int) -> int:
    return 2 * size + 3

  def symbol(self, index: int) -> int | str:
    if index < self.num_values:
      return text(index, False)
    if index < self.num_values + self.num_vars:
      return text(index - self.num_values, True)
    return "?"   # the query marker

  def problem(self, prompt_tokens: Sequence[int]) -> dict:
    symbols = self.decode(prompt_tokens)
    return {"assignments": [list(pair) for pair in zip(symbols[:-2:2], symbols[1:-2:2])],
            "query": symbols[-1]}

  def draw(self, rng: np.random.Generator, sizes_B: np.ndarray, features: bool) -> Drawn:
    rows, width = len(sizes_B), sizes_B.max()
    names_BxN = distinct(rng, rows, self.num_vars, width)
    constants_BxC = distinct(rng, rows, self.num_values, min(self.num_chains, width))
    return self.program(sizes_B, names_BxN, constants_BxC, shuffled(rng, sizes_B),
                        rng.integers(0, sizes_B), features)

  def program(self, sizes_B: np.ndarray, names_BxN: np.ndarray, constants_BxC: np.ndarray,
              written_BxN: np.ndarray, query_B: np.ndarray, features: bool) -> Drawn:
    """The examples whose names in dealing order are names_BxN[b, :size] (name i is in chain i
    mod c, c = min(num_chains, size): the chain roots first, then every name after the one c
    before it, which it is assigned), whose roots are assigned constants_BxC[b, :c], with the
    assignment of name written_BxN[b, w] at place w of the prompt, asking for name query_B[b]."""
    c_B = np.minimum(self.num_chains, sizes_B)
    n_B1, c_B1 = sizes_B[:, None], c_B[:, None]
    i_N = np.arange(names_BxN.shape[1])
    real_BxN = i_N < n_B1
    var_BxN = NUM_SPECIAL + self.num_values + names_BxN
    before_BxN = np.take_along_axis(var_BxN, np.maximum(i_N - c_B1, 0), 1)
    root_BxN = NUM_SPECIAL + np.take_along_axis(constants_BxC, np.minimum(i_N, c_B1 - 1), 1)
    rhs_BxN = np.where(i_N < c_B1, root_BxN, before_BxN)
    prompt_BxP = np.full((len(sizes_B), 2 * names_BxN.shape[1] + 2), PAD)
    prompt_BxP[:, 0:-2:2] = np.where(real_BxN, np.take_along_axis(var_BxN, written_BxN, 1), PAD)
    prompt_BxP[:, 1:-2:2] = np.where(real_BxN, np.take_along_axis(rhs_BxN, written_BxN, 1), PAD)
    rows = np.arange(len(sizes_B))
    prompt_BxP[rows, 2 * sizes_B] = self.query_token
    prompt_BxP[rows, 2 * sizes_B + 1] = var_BxN[rows, query_B]
    answer_Bx1 = NUM_SPECIAL + constants_BxC[rows, query_B % c_B][:, None]   # q's chain's
    if not features:
      return Drawn(prompt_BxP, answer_Bx1)
    return Drawn(prompt_BxP, answer_Bx1, {
        "num_vars": n_B1,
        "referenced": (query_B + c_B < sizes_B)[:, None].astype(int),   # a name c later
        "hops": (query_B // c_B)[:, None]})
