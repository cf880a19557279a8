"""Sorting: the answer is the prompt's n integers in non-decreasing order.

Features of answer token j (0-based) with value v:
  size (structural)       n, the number of integers.
  multiplicity (struct.)  how often v occurs in the prompt.
  remaining (execution)   n - j: integers not yet emitted, counting this one.
  gap (execution)         v minus the previous answer value (v itself for j = 0).
  repeat (execution)      copies of v already emitted before this token.
"""
import dataclasses
from typing import Sequence

import numpy as np

from anira_jax.tasks.base import NUM_SPECIAL, PAD, Drawn, Task


@dataclasses.dataclass(frozen=True)
class Sorting(Task):
  num_values: int = 16

  name = "sorting"
  min_size = 1
  main_feature = "remaining"
  feature_kinds = {"size": "structural", "multiplicity": "structural",
                   "remaining": "execution", "gap": "execution", "repeat": "execution"}

  @property
  def vocab_size(self) -> int:
    return NUM_SPECIAL + self.num_values

  def seq_len(self, size: int) -> int:
    return 2 * size

  def symbol(self, index: int) -> int:
    return index

  def problem(self, prompt_tokens: Sequence[int]) -> list[int]:
    return self.decode(prompt_tokens)

  def draw(self, rng: np.random.Generator, sizes_B: np.ndarray, features: bool) -> Drawn:
    j_N = np.arange(sizes_B.max())
    real_BxN = j_N < sizes_B[:, None]
    drawn_BxN = rng.integers(0, self.num_values, real_BxN.shape)
    values_BxN = np.where(real_BxN, drawn_BxN, self.num_values)   # padding: above every value
    answer_BxN = np.sort(values_BxN, axis=1)                       # so it stays at the end
    tokens = lambda v_BxN: np.where(real_BxN, NUM_SPECIAL + v_BxN, PAD)
    if not features:
      return Drawn(tokens(values_BxN), tokens(answer_BxN))
    counts_BxV = (values_BxN[:, :, None] == np.arange(self.num_values + 1)).sum(1)
    first_BxV = np.cumsum(counts_BxV, axis=1) - counts_BxV   # answer index of v's first copy
    per_token = {
        "size": sizes_B[:, None],
        "multiplicity": np.take_along_axis(counts_BxV, answer_BxN, 1),
        "remaining": sizes_B[:, None] - j_N,
        "gap": np.diff(answer_BxN, axis=1, prepend=0),
        "repeat": j_N - np.take_along_axis(first_BxV, answer_BxN, 1),
    }
    return Drawn(tokens(values_BxN), tokens(answer_BxN),
                 {k: np.where(real_BxN, v, 0) for k, v in per_token.items()})
