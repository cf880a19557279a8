"""Sorting: the answer is the prompt's n integers in non-decreasing order.

Features of answer token j (0-based) with value v:
  size (structural)       n, the number of integers.
  multiplicity (struct.)  how often v occurs in the prompt.
  remaining (execution)   n - j: integers not yet emitted, counting this one.
  gap (execution)         v minus the previous answer value (v itself for j = 0).
  repeat (execution)      copies of v already emitted before this token.
"""
import dataclasses

import numpy as np

from anira_jax.tasks.base import NUM_SPECIAL, Example, Task


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

  def generate(self, rng: np.random.Generator, size: int) -> Example:
    values = rng.integers(0, self.num_values, size).tolist()
    answer = sorted(values)
    counts = {v: values.count(v) for v in values}
    previous = [0] + answer[:-1]
    return Example(
        problem=values,
        answer=answer,
        prompt_tokens=[NUM_SPECIAL + v for v in values],
        answer_tokens=[NUM_SPECIAL + v for v in answer],
        features={
            "size": [size] * size,
            "multiplicity": [counts[v] for v in answer],
            "remaining": [size - j for j in range(size)],
            "gap": [v - p for v, p in zip(answer, previous)],
            "repeat": [answer[:j].count(v) for j, v in enumerate(answer)],
        })
