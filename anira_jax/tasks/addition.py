"""Addition: the decimal digits of a + b for two n-digit numbers (n = size).

Each of the n digits of a and b is uniform in 0..9 independently (leading zeros allowed, so a
and b are uniform in [0, 10^n)). The answer always has n + 1 digits: a + b zero-padded, the
first digit (position n) being the final carry, possibly 0. Digit order: most significant digit
first for both numbers and the answer, or least significant first if `lsb_first`.

Problem [a, b] (ints). Answer: the n + 1 digits in token order. Tokens: digit d -> 2 + d,
PLUS "+" -> 12; vocab_size = 13. Prompt: digits(a) + [PLUS] + digits(b), 2n + 1 tokens.
seq_len(n) = 3n + 2.

Notation: a_i, b_i the digits at position i (10^i; a_n = b_n = 0), carries c_0 = 0 and
c_{i+1} = [a_i + b_i + c_i >= 10]. Features of the answer digit at position i:
  num_digits (structural)   n.
  position (structural)     i (0 = units, n = the final carry digit), whatever the order.
  pair_sum (structural)     a_i + b_i (0 at position n).
  carry (execution)         c_i, the carry coming into the digit.
  carry_chain (execution)   the length of the run of carries feeding the digit: the largest L
                            with c_i = c_{i-1} = ... = c_{i-L+1} = 1 (0 if c_i = 0). The carry
                            was generated at position i - L and travelled through L - 1 more.
  lookahead (execution)     lower positions to inspect, from i - 1 downwards, to know c_i: the
                            smallest d >= 1 with a_{i-d} + b_{i-d} != 9, or i if there is none
                            (then c_i = 0); 0 for i = 0.
"""
import dataclasses

import numpy as np

from anira_jax.tasks.base import NUM_SPECIAL, Example, Task

PLUS = NUM_SPECIAL + 10


def carries(a: list[int], b: list[int]) -> list[int]:
  """c_0..c_n for little-endian digit lists a, b of equal length n."""
  c = [0]
  for x, y in zip(a, b):
    c.append(int(x + y + c[-1] >= 10))
  return c


def carry_chains(c: list[int]) -> list[int]:
  """Per position, the run length of consecutive carries ending there (c_0 = 0)."""
  chains = [0]
  for ci in c[1:]:
    chains.append(chains[-1] + 1 if ci else 0)
  return chains


def lookaheads(pair_sums: list[int]) -> list[int]:
  """Per position i (little-endian, including i = n), the lookahead defined above."""
  out = [0]
  for i in range(1, len(pair_sums) + 1):
    out.append(1 if pair_sums[i - 1] != 9 else out[-1] + 1)
  return out


@dataclasses.dataclass(frozen=True)
class Addition(Task):
  lsb_first: bool = False

  name = "addition"
  min_size = 1
  vocab_size = NUM_SPECIAL + 11
  main_feature = "carry_chain"
  feature_kinds = {"num_digits": "structural", "position": "structural",
                   "pair_sum": "structural", "carry": "execution",
                   "carry_chain": "execution", "lookahead": "execution"}

  def seq_len(self, size: int) -> int:
    return 3 * size + 2

  def symbol(self, index: int) -> int | str:
    return index if index < 10 else "+"

  def _digit_tokens(self, little_endian: list[int]) -> list[int]:
    return [NUM_SPECIAL + d for d in (little_endian if self.lsb_first else little_endian[::-1])]

  def generate(self, rng: np.random.Generator, size: int) -> Example:
    a = rng.integers(0, 10, size).tolist()       # little-endian digits
    b = rng.integers(0, 10, size).tolist()
    c = carries(a, b)
    pair_sums = [x + y for x, y in zip(a, b)]
    digits = [(s + ci) % 10 for s, ci in zip(pair_sums, c)] + [c[-1]]
    order = range(size + 1) if self.lsb_first else range(size, -1, -1)
    per_position = {
        "num_digits": [size] * (size + 1),
        "position": list(range(size + 1)),
        "pair_sum": pair_sums + [0],
        "carry": c,
        "carry_chain": carry_chains(c),
        "lookahead": lookaheads(pair_sums),
    }
    answer = [digits[i] for i in order]
    return Example(
        problem=[int("".join(map(str, a[::-1]))), int("".join(map(str, b[::-1])))],
        answer=answer,
        prompt_tokens=self._digit_tokens(a) + [PLUS] + self._digit_tokens(b),
        answer_tokens=[NUM_SPECIAL + d for d in answer],
        features={k: [v[i] for i in order] for k, v in per_position.items()})
