"""ModArith: step-by-step evaluation of a bracketed arithmetic expression modulo p.

Expression (n = size operators): a random binary tree with n operator nodes whose shape comes
from random splits (a node with m operators puts a uniform 0..m-1 of them in its left subtree);
leaves are uniform in 0..p-1 (p = `modulus`), operators uniform among `ops` (a subset of
"+-*", computed mod p). The text has no precedence: text(op(L, R)) = text(L) op term(R), where
term(R) is R for a leaf and "(" text(R) ")" otherwise, so brackets appear exactly around right
operands that are expressions and evaluation is left to right within a bracket level.

Problem: the expression, tokens separated by spaces, e.g. "3 + ( 4 * 2 ) - 1". Answer: the
values of the n operators in post-order, the order in which a left-to-right stack evaluator
applies them; the last answer token is the value of the whole expression. Tokens: value v ->
2 + v, "+", "-", "*" -> 2 + p + 0, 1, 2, "(" -> 5 + p, ")" -> 6 + p; vocab_size = p + 7.
Prompt: n + 1 numbers, n operators and at most n - 1 bracket pairs, so seq_len(n) = 5n - 1.

Features of answer token j, the operator node x:
  num_ops (structural)       n.
  subtree_ops (structural)   operators in the subtree of x, counting x.
  operator (structural)      index of the operator of x in "+-*".
  stack_depth (execution)    values on the stack of a postfix evaluator when x is applied,
                             counting its two operands; equals 2 + the bracket depth of the
                             operator token of x in the prompt.
  reach (execution)          how many answer tokens back the oldest intermediate result x
                             consumes was emitted: j minus the answer index of its left operand
                             if that is an operator, else 1 if its right operand is, else 0.
"""
import dataclasses
from typing import NamedTuple, Sequence

import numpy as np

from anira_jax.tasks.base import NUM_SPECIAL, PAD, Drawn, Task

OPS = "+-*"


class Trees(NamedTuple):
  """Expression trees in preorder, one row each, one column per node (2n + 1 of them; past
  that: ops -1, the rest 0)."""
  ops_BxT: np.ndarray        # operators in the node's subtree, counting it (0: a leaf)
  depth_BxT: np.ndarray      # ancestors of the node
  rights_BxT: np.ndarray     # right children on the path from the root to the node, counting it
  is_right_BxT: np.ndarray   # whether it is the right operand of its parent
  value_BxT: np.ndarray      # a leaf's value
  operator_BxT: np.ndarray   # an operator node's index in OPS


def random_trees(rng: np.random.Generator, sizes_B: np.ndarray, modulus: int,
                 ops: str) -> Trees:
  """One random expression tree per row with sizes_B[b] operators (see the module docstring),
  expanded in preorder: an operator node's left operand comes next, its right operand waits on
  a stack until the left one is expanded."""
  rows, width = len(sizes_B), 2 * int(sizes_B.max()) + 1
  rows_B, scratch = np.arange(rows), int(sizes_B.max())
  split_BxT = rng.random((rows, width))
  operator_BxT = np.array([OPS.index(op) for op in ops])[rng.integers(len(ops), size=(rows, width))]
  value_BxT = rng.integers(modulus, size=(rows, width))
  waiting = [np.zeros((rows, scratch + 1), int) for _ in range(3)]   # ops, depth, rights
  count_B = np.zeros(rows, int)                                       # right operands waiting
  node = [sizes_B, np.zeros(rows, int), np.zeros(rows, int), np.zeros(rows, bool)]
  live_B = np.ones(rows, bool)
  out = [np.zeros((rows, width), int) for _ in range(4)]
  for p in range(width):
    for column, field in zip(out, node):
      column[:, p] = np.where(live_B, field, -1)
    m_B, depth_B, rights_B, _ = node
    expands_B = live_B & (m_B > 0)
    left_B = (split_BxT[:, p] * m_B).astype(int)       # uniform in 0..m-1
    slot_B = np.where(expands_B, count_B, scratch)    # the scratch column takes the rest
    for stack, field in zip(waiting, (m_B - 1 - left_B, depth_B + 1, rights_B + 1)):
      stack[rows_B, slot_B] = field
    count_B = count_B + expands_B
    pops_B = live_B & ~expands_B & (count_B > 0)
    top_B = np.maximum(count_B - 1, 0)
    node = [np.where(expands_B, left_B, waiting[0][rows_B, top_B]),
            np.where(expands_B, depth_B + 1, waiting[1][rows_B, top_B]),
            np.where(expands_B, rights_B, waiting[2][rows_B, top_B]), ~expands_B]
    live_B = expands_B | pops_B
    count_B = count_B - pops_B
  ops_BxT, depth_BxT, rights_BxT, is_right_BxT = out
  return Trees(ops_BxT, np.maximum(depth_BxT, 0), np.maximum(rights_BxT, 0), is_right_BxT == 1,
               np.where(ops_BxT == 0, value_BxT, 0), np.where(ops_BxT > 0, operator_BxT, 0))


def apply(operator_B: np.ndarray, x_B: np.ndarray, y_B: np.ndarray, modulus: int) -> np.ndarray:
  """x op y mod modulus per row, op = OPS[operator_B]."""
  return np.choose(operator_B, [x_B + y_B, x_B - y_B, x_B * y_B]) % modulus


def evaluate(trees: Trees, modulus: int) -> np.ndarray:
  """value_BxT: the value of every node's subtree, children (later in preorder) first."""
  value_BxT = trees.value_BxT.copy()
  rows_B, width = np.arange(len(value_BxT)), value_BxT.shape[1]
  for p in range(width - 2, -1, -1):               # the last column is never an operator
    right_B = np.minimum(p + 2 + 2 * trees.ops_BxT[:, p + 1], width - 1)
    value_B = apply(trees.operator_BxT[:, p], value_BxT[:, p + 1], value_BxT[rows_B, right_B],
                    modulus)
    value_BxT[:, p] = np.where(trees.ops_BxT[:, p] > 0, value_B, value_BxT[:, p])
  return value_BxT


def left_sizes(trees: Trees) -> np.ndarray:
  """left_size_BxT: the nodes in every operator node's left operand (0 for a leaf), whose root
  follows the operator node in preorder."""
  left_ops_BxT = np.zeros_like(trees.ops_BxT)
  left_ops_BxT[:, :-1] = trees.ops_BxT[:, 1:]
  return np.where(trees.ops_BxT > 0, 2 * left_ops_BxT + 1, 0)


def infix_slots(trees: Trees) -> np.ndarray:
  """slot_BxT: every node's place in the in-order (left operand, operator, right operand)
  sequence of nodes (columns past a row's tree keep their own index, so that each row is a
  permutation of its columns)."""
  pre_T = np.arange(trees.ops_BxT.shape[1])
  # The nodes before v in in-order: its left operand, and each ancestor it is right of, with
  # that ancestor's left operand; preorder counts the same but every ancestor.
  slot_BxT = pre_T - trees.depth_BxT + trees.rights_BxT + left_sizes(trees)
  return np.where(trees.ops_BxT >= 0, slot_BxT, pre_T)


def infix(trees: Trees, token_BxT: np.ndarray, open_token: int, close_token: int) -> np.ndarray:
  """[B, 4N - 1] tokens of the text: each node's token in in-order, "(" before and ")" after
  every right operand that is an expression, PAD after."""
  rows, width = token_BxT.shape
  slot_BxT, left_size_BxT = infix_slots(trees), left_sizes(trees)
  bracketed_BxT = trees.is_right_BxT & (trees.ops_BxT > 0)
  first_BxT = slot_BxT - left_size_BxT                          # the slots of its subtree
  last_BxT = slot_BxT + 2 * trees.ops_BxT - left_size_BxT
  offset_Bx1 = width * np.arange(rows)[:, None]
  count = lambda slots_BxT: np.bincount((offset_Bx1 + slots_BxT)[bracketed_BxT],
                                        minlength=rows * width).reshape(rows, width)
  opens_BxT, closes_BxT = count(first_BxT), count(last_BxT)   # brackets around each slot
  real_BxT = trees.ops_BxT >= 0                                # slots of real nodes, too
  span_BxT = np.where(real_BxT, opens_BxT + 1 + closes_BxT, 0)
  start_BxT = np.cumsum(span_BxT, axis=1) - span_BxT
  text_BxL = np.full((rows, 2 * width - 3), PAD)
  text_BxL[np.arange(text_BxL.shape[1]) < span_BxT.sum(axis=1)[:, None]] = close_token
  b, v = np.nonzero(real_BxT)
  text_BxL[b, (start_BxT + opens_BxT)[b, slot_BxT[b, v]]] = token_BxT[b, v]
  b, slot = np.nonzero(opens_BxT)
  text_BxL[b, start_BxT[b, slot]] = open_token
  return text_BxL


@dataclasses.dataclass(frozen=True)
class ModArith(Task):
  modulus: int = 7
  ops: str = OPS

  name = "modarith"
  min_size = 1
  main_feature = "stack_depth"
  feature_kinds = {"num_ops": "structural", "subtree_ops": "structural",
                   "operator": "structural", "stack_depth": "execution", "reach": "execution"}

  def __post_init__(self):
    if self.modulus < 2 or not self.ops or not set(self.ops) <= set(OPS):
      raise ValueError(f"modarith needs modulus >= 2 and ops a non-empty subset of {OPS!r}; "
                       f"got {self}")

  @property
  def vocab_size(self) -> int:
    return NUM_SPECIAL + self.modulus + len(OPS) + 2

  def token(self, symbol: str) -> int:
    if symbol.isdigit():
      return NUM_SPECIAL + int(symbol)
    return NUM_SPECIAL + self.modulus + (OPS + "()").index(symbol)

  def seq_len(self, size: int) -> int:
    return 5 * size - 1

  def symbol(self, index: int) -> int | str:
    return index if index < self.modulus else (OPS + "()")[index - self.modulus]

  def problem(self, prompt_tokens: Sequence[int]) -> str:
    return " ".join(map(str, self.decode(prompt_tokens)))

  def draw(self, rng: np.random.Generator, sizes_B: np.ndarray, features: bool) -> Drawn:
    trees = random_trees(rng, sizes_B, self.modulus, self.ops)
    is_op_BxT = trees.ops_BxT > 0
    token_BxT = NUM_SPECIAL + np.where(is_op_BxT, self.modulus + trees.operator_BxT,
                                       trees.value_BxT)
    prompt_BxL = infix(trees, token_BxT, self.token("("), self.token(")"))
    # The operators in post-order: v's place among all nodes is pre - depth + nodes below v.
    pre_T = np.arange(trees.ops_BxT.shape[1])
    post_BxT = pre_T - trees.depth_BxT + 2 * trees.ops_BxT
    order_BxN = np.where(is_op_BxT, post_BxT, 2 * len(pre_T)).argsort(axis=1)[:, :sizes_B.max()]
    real_BxN = np.arange(order_BxN.shape[1]) < sizes_B[:, None]
    at = lambda v_BxT: np.take_along_axis(v_BxT, order_BxN, 1)
    answer_BxN = np.where(real_BxN, NUM_SPECIAL + at(evaluate(trees, self.modulus)), PAD)
    if not features:
      return Drawn(prompt_BxL, answer_BxN)
    index_BxT = np.zeros_like(trees.ops_BxT)                     # answer index of each operator
    np.put_along_axis(index_BxT, order_BxN, np.arange(order_BxN.shape[1]), 1)
    left_T = np.minimum(pre_T + 1, len(pre_T) - 1)                      # an operator's operands
    right_BxT = np.minimum(pre_T + 1 + left_sizes(trees), len(pre_T) - 1)
    reach_BxT = np.where(is_op_BxT[:, left_T], index_BxT - index_BxT[:, left_T],
                         np.take_along_axis(is_op_BxT, right_BxT, 1))
    per_token = {"num_ops": sizes_B[:, None], "subtree_ops": at(trees.ops_BxT),
                 "operator": at(trees.operator_BxT), "stack_depth": 2 + at(trees.rights_BxT),
                 "reach": at(reach_BxT)}
    return Drawn(prompt_BxL, answer_BxN,
                 {k: np.where(real_BxN, v, 0) for k, v in per_token.items()})
