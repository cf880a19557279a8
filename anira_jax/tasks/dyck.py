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

import numpy as np

from anira_jax.tasks.base import NUM_SPECIAL, Example, Task

PAIRS = ("()", "[]", "{}", "<>")


def random_prefix(rng: np.random.Generator, n: int, k: int, max_depth: int,
                  open_prob: float) -> list[tuple[int, bool]]:
  """(pair, is_opener) per bracket, for a walk of length n that ends with a bracket open."""
  while True:
    stack, prefix = [], []
    for _ in range(n):
      if not stack or (len(stack) < max_depth and rng.random() < open_prob):
        stack.append(int(rng.integers(k)))
        prefix.append((stack[-1], True))
      else:
        prefix.append((stack.pop(), False))
    if stack:
      return prefix


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

  def generate(self, rng: np.random.Generator, size: int) -> Example:
    prefix = random_prefix(rng, size, self.k, self.max_depth, self.open_prob)
    stack, deepest = [], 0             # stack of (pair, position of the opener)
    for position, (pair, is_opener) in enumerate(prefix):
      if is_opener:
        stack.append((pair, position))
        deepest = max(deepest, len(stack))
      else:
        stack.pop()
    closing = stack[::-1]
    depth = len(closing)
    return Example(
        problem="".join(PAIRS[p][0 if o else 1] for p, o in prefix),
        answer=[PAIRS[p][1] for p, _ in closing],
        prompt_tokens=[NUM_SPECIAL + 2 * p + (0 if o else 1) for p, o in prefix],
        answer_tokens=[NUM_SPECIAL + 2 * p + 1 for p, _ in closing],
        features={
            "length": [size] * depth,
            "num_open": [depth] * depth,
            "prefix_depth": [deepest] * depth,
            "pair": [p for p, _ in closing],
            "stack_depth": [depth - j for j in range(depth)],
            "match_distance": [size + j - at for j, (_, at) in enumerate(closing)],
        })
