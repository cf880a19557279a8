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
from typing import Sequence

import numpy as np

from anira_jax.tasks.base import NUM_SPECIAL, PAD, Drawn, Task

PLUS = NUM_SPECIAL + 10


def carries(a_BxN: np.ndarray, b_BxN: np.ndarray) -> np.ndarray:
  """c_0..c_N per row for little-endian digits a, b [B, N] (0-padded past a row's digits)."""
  c_BxN1 = np.zeros((a_BxN.shape[0], a_BxN.shape[1] + 1), np.int64)
  for i in range(a_BxN.shape[1]):
    c_BxN1[:, i + 1] = a_BxN[:, i] + b_BxN[:, i] + c_BxN1[:, i] >= 10
  return c_BxN1


def carry_chains(c_BxN1: np.ndarray) -> np.ndarray:
  """Per position, the run length of consecutive carries ending there (c_0 = 0)."""
  chains_BxN1 = np.zeros_like(c_BxN1)
  for i in range(1, c_BxN1.shape[1]):
    chains_BxN1[:, i] = np.where(c_BxN1[:, i] == 1, chains_BxN1[:, i - 1] + 1, 0)
  return chains_BxN1


def lookaheads(pair_sums_BxN: np.ndarray) -> np.ndarray:
  """Per position i (little-endian, including i = N), the lookahead defined above."""
  out_BxN1 = np.zeros((pair_sums_BxN.shape[0], pair_sums_BxN.shape[1] + 1), np.int64)
  for i in range(1, out_BxN1.shape[1]):
    out_BxN1[:, i] = np.where(pair_sums_BxN[:, i - 1] != 9, 1, out_BxN1[:, i - 1] + 1)
  return out_BxN1


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

  def problem(self, prompt_tokens: Sequence[int]) -> list[int]:
    symbols = self.decode(prompt_tokens)
    plus = symbols.index("+")
    step = -1 if self.lsb_first else 1        # most significant digit first
    return [int("".join(map(str, digits[::step]))) for digits in (symbols[:plus],
                                                                  symbols[plus + 1:])]

  def draw(self, rng: np.random.Generator, sizes_B: np.ndarray, features: bool) -> Drawn:
    n_B, width = sizes_B[:, None], sizes_B.max()
    i_N, i_N1 = np.arange(width), np.arange(width + 1)
    a_BxN, b_BxN = (np.where(i_N < n_B, rng.integers(0, 10, (len(sizes_B), width)), 0)
                    for _ in range(2))           # little-endian digits, 0 past a row's size
    c_BxN1 = carries(a_BxN, b_BxN)
    pair_sums_BxN1 = np.pad(a_BxN + b_BxN, ((0, 0), (0, 1)))
    digits_BxN1 = (pair_sums_BxN1 + c_BxN1) % 10       # position n holds the final carry
    # The digit position of every token in token order, the operands' and the answer's.
    order_BxN = np.broadcast_to(i_N if self.lsb_first else np.maximum(n_B - 1 - i_N, 0),
                                a_BxN.shape)
    order_BxN1 = np.broadcast_to(i_N1 if self.lsb_first else np.maximum(n_B - i_N1, 0),
                                 c_BxN1.shape)
    real_BxN, real_BxN1 = i_N < n_B, i_N1 <= n_B
    digit_tokens = lambda d_BxM, order_BxT, real_BxT: np.where(
        real_BxT, NUM_SPECIAL + np.take_along_axis(d_BxM, order_BxT, 1), PAD)
    prompt_BxP = np.full((len(sizes_B), 2 * width + 1), PAD)
    prompt_BxP[:, :width] = digit_tokens(a_BxN, order_BxN, real_BxN)
    prompt_BxP[np.arange(len(sizes_B)), sizes_B] = PLUS
    b_tokens_BxN = digit_tokens(b_BxN, order_BxN, real_BxN)
    rows, cols = np.nonzero(real_BxN)
    prompt_BxP[rows, sizes_B[rows] + 1 + cols] = b_tokens_BxN[rows, cols]
    answer_tokens_BxN1 = digit_tokens(digits_BxN1, order_BxN1, real_BxN1)
    if not features:
      return Drawn(prompt_BxP, answer_tokens_BxN1)
    per_position = {
        "num_digits": np.broadcast_to(n_B, c_BxN1.shape),
        "position": np.broadcast_to(i_N1, c_BxN1.shape),
        "pair_sum": pair_sums_BxN1,
        "carry": c_BxN1,
        "carry_chain": carry_chains(c_BxN1),
        "lookahead": lookaheads(a_BxN + b_BxN),
    }
    return Drawn(prompt_BxP, answer_tokens_BxN1, {
        k: np.where(real_BxN1, np.take_along_axis(v, order_BxN1, 1), 0)
        for k, v in per_position.items()})
