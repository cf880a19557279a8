"""Dyck: the shortest completion of a prefix of a Dyck word over k bracket pairs.

Alphabet: the first k of the pairs () [] {} <>. The prefix (n = size brackets) is a random walk
on the stack: at depth 0 it opens, at depth `max_depth` it closes, otherwise it opens with
probability `open_prob` and closes the innermost open bracket otherwise; every opener's pair is
uniform among the k. Walks ending at depth 0 are redrawn, so at least one bracket is left open,
and the nesting depth never exceeds `max_depth`.

Problem: the prefix string, e.g. "([]([". Answer: the closers of the open brackets, innermost
first, as one-character strings (D = final depth of the prefix tokens, 1 <= D <= max_depth).
Tokens: opener of pair i -> 2 + 2i, its closer -> 3 + 2i; vocab_size = 2 + 2k.
seq_len(n) = n + min(n, max_depth).

Positions: w = prefix + completion, positions 0..n+D-1; answer token j is at position n + j.
Features of answer token j:
  length (structural)          n, the prefix length.
  num_open (structural)        D, the answer length.
  prefix_depth (structural)    the deepest nesting reached in the prefix.
  pair (structural)            pair index of the bracket (0 for (), 1 for [], ...).
  stack_depth (execution)      open brackets before the token is emitted: D - j.
  match_distance (execution)   (n + j) - (position in w of the opener it closes), >= 1.
"""
import dataclasses
from typing import NamedTuple, Sequence

import numpy as np

from anira_jax.tasks.base import NUM_SPECIAL, PAD, Drawn, Task

PAIRS = ("()", "[]", "{}", "<>")


class Walks(NamedTuple):
  """Prefixes as arrays, one row each (past a row's length: pair 0, no opener)."""
  pair_BxN: np.ndarray       # pair index of every bracket
  opener_BxN: np.ndarray     # whether it opens
  open_pair_BxD: np.ndarray  # the brackets left open, outermost first: pair
  open_at_BxD: np.ndarray    # and position (entries at or past depth_B: 0)
  depth_B: np.ndarray        # brackets left open
  deepest_B: np.ndarray      # deepest nesting reached


def depth_walks(rng: np.random.Generator, sizes_B: np.ndarray, width: int, max_depth: int,
                open_prob: float) -> tuple[np.ndarray, np.ndarray]:
  """(opener_BxN, after_BxN): one stack walk per row (see the module docstring), whether each
  bracket opens and the depth after it, for width >= sizes_B steps (the row's own are first)."""
  coin_BxN = rng.random((len(sizes_B), width)) < open_prob
  opener_BxN = np.zeros((len(sizes_B), width), bool)
  after_BxN = np.zeros((len(sizes_B), width), int)
  depth_B = np.zeros(len(sizes_B), int)
  for t in range(int(sizes_B.max())):
    opener_BxN[:, t] = (depth_B == 0) | ((depth_B < max_depth) & coin_BxN[:, t])
    depth_B = np.where(opener_BxN[:, t], depth_B + 1, depth_B - 1)
    after_BxN[:, t] = depth_B
  return opener_BxN, after_BxN


def random_prefixes(rng: np.random.Generator, sizes_B: np.ndarray, k: int, max_depth: int,
                    open_prob: float) -> Walks:
  """Walks of sizes_B brackets that end with a bracket open (the rows whose walk ends at depth 0
  are redrawn until none does), each opener's pair uniform among the k."""
  rows_B, width = np.arange(len(sizes_B)), int(sizes_B.max())
  opener_BxN, after_BxN = depth_walks(rng, sizes_B, width, max_depth, open_prob)
  redo = np.flatnonzero(after_BxN[rows_B, sizes_B - 1] == 0)
  while redo.size:
    opener_BxN[redo], after_BxN[redo] = depth_walks(rng, sizes_B[redo], width, max_depth,
                                                    open_prob)
    redo = redo[after_BxN[redo, sizes_B[redo] - 1] == 0]
  return matched(sizes_B, opener_BxN, after_BxN, rng.integers(k, size=(len(rows_B), width)),
                 max_depth)


def matched(sizes_B: np.ndarray, opener_BxN: np.ndarray, after_BxN: np.ndarray,
            drawn_BxN: np.ndarray, max_depth: int) -> Walks:
  """The walks of `depth_walks` with pairs: an opener's is drawn_BxN there, a closer's that of the
  opener it closes."""
  rows_B, width = np.arange(len(sizes_B)), opener_BxN.shape[1]
  i_N = np.arange(width)
  real_BxN = i_N < sizes_B[:, None]
  opener_BxN = opener_BxN & real_BxN
  # A bracket's level is the stack height with it on the stack. Within a level, brackets
  # alternate opener, closer, ... in position order, each closer closing the opener before it.
  level_BxN = np.where(opener_BxN, after_BxN, after_BxN + 1)
  order_BxN = np.where(real_BxN, level_BxN * width + i_N, (max_depth + 2) * width).argsort(1)
  at = lambda v_BxN: np.take_along_axis(v_BxN, order_BxN, 1)     # in (level, position) order
  opener_in_order_BxN = at(opener_BxN)
  previous_BxN = np.concatenate([order_BxN[:, :1], order_BxN[:, :-1]], 1)
  opened_by_BxN = np.where(opener_in_order_BxN, order_BxN, previous_BxN)
  pair_BxN = np.zeros_like(drawn_BxN)
  np.put_along_axis(pair_BxN, order_BxN, np.take_along_axis(drawn_BxN, opened_by_BxN, 1), 1)
  # The brackets left open: the last of each level that ends with an opener.
  level_in_order_BxN = at(np.where(real_BxN, level_BxN, -1))
  last_BxN = np.ones_like(real_BxN)
  last_BxN[:, :-1] = level_in_order_BxN[:, :-1] != level_in_order_BxN[:, 1:]
  b, s = np.nonzero(last_BxN & opener_in_order_BxN)
  open_pair_BxD, open_at_BxD = (np.zeros((len(rows_B), max_depth), int) for _ in range(2))
  open_at_BxD[b, level_in_order_BxN[b, s] - 1] = order_BxN[b, s]
  open_pair_BxD[b, level_in_order_BxN[b, s] - 1] = drawn_BxN[b, order_BxN[b, s]]
  return Walks(np.where(real_BxN, pair_BxN, 0), opener_BxN, open_pair_BxD, open_at_BxD,
               after_BxN[rows_B, sizes_B - 1], np.where(real_BxN, after_BxN, 0).max(axis=1))


@dataclasses.dataclass(frozen=True)
class Dyck(Task):
  k: int = 2
  max_depth: int = 16
  open_prob: float = 0.5

  name = "dyck"
  min_size = 1
  main_feature = "stack_depth"
  feature_kinds = {"length": "structural", "num_open": "structural",
                   "prefix_depth": "structural", "pair": "structural",
                   "stack_depth": "execution", "match_distance": "execution"}

  def __post_init__(self):
    if not 1 <= self.k <= len(PAIRS) or self.max_depth < 2 or not 0 < self.open_prob <= 1:
      raise ValueError(f"dyck needs 1 <= k <= 4, max_depth >= 2, 0 < open_prob <= 1; got {self}")

  @property
  def vocab_size(self) -> int:
    return NUM_SPECIAL + 2 * self.k

  def seq_len(self, size: int) -> int:
    return size + min(size, self.max_depth)

  def symbol(self, index: int) -> str:
    return PAIRS[index // 2][index % 2]   # opener of pair i at 2i, its closer at 2i + 1

  def problem(self, prompt_tokens: Sequence[int]) -> str:
    return "".join(self.decode(prompt_tokens))

  def draw(self, rng: np.random.Generator, sizes_B: np.ndarray, features: bool) -> Drawn:
    w = random_prefixes(rng, sizes_B, self.k, self.max_depth, self.open_prob)
    n_B1, depth_B1 = sizes_B[:, None], w.depth_B[:, None]
    prompt_BxN = np.where(np.arange(w.pair_BxN.shape[1]) < n_B1,
                          NUM_SPECIAL + 2 * w.pair_BxN + ~w.opener_BxN, PAD)
    j_D = np.arange(min(self.max_depth, w.pair_BxN.shape[1]))
    real_BxD = j_D < depth_B1
    inner_BxD = np.maximum(depth_B1 - 1 - j_D, 0)    # answer token j closes the j-th innermost
    pair_BxD = np.take_along_axis(w.open_pair_BxD, inner_BxD, 1)
    answer_BxD = np.where(real_BxD, NUM_SPECIAL + 2 * pair_BxD + 1, PAD)
    if not features:
      return Drawn(prompt_BxN, answer_BxD)
    per_token = {
        "length": n_B1,
        "num_open": depth_B1,
        "prefix_depth": w.deepest_B[:, None],
        "pair": pair_BxD,
        "stack_depth": depth_B1 - j_D,
        "match_distance": n_B1 + j_D - np.take_along_axis(w.open_at_BxD, inner_BxD, 1),
    }
    return Drawn(prompt_BxN, answer_BxD,
                 {k: np.where(real_BxD, v, 0) for k, v in per_token.items()})   # [B, D] each
