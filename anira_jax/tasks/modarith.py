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
from typing import Union

import numpy as np

from anira_jax.tasks.base import NUM_SPECIAL, Example, Task

OPS = "+-*"
Tree = Union[int, tuple[str, "Tree", "Tree"]]


def random_tree(rng: np.random.Generator, n: int, modulus: int, ops: str) -> Tree:
  """A random expression tree with n operators: an int leaf or (op, left, right)."""
  if n == 0:
    return int(rng.integers(modulus))
  left = int(rng.integers(n))
  op = ops[int(rng.integers(len(ops)))]
  return (op, random_tree(rng, left, modulus, ops), random_tree(rng, n - 1 - left, modulus, ops))


def text(tree: Tree) -> list[str]:
  """The expression as a list of token strings."""
  if isinstance(tree, int):
    return [str(tree)]
  op, left, right = tree
  term = text(right) if isinstance(right, int) else ["("] + text(right) + [")"]
  return text(left) + [op] + term


def apply(op: str, x: int, y: int, modulus: int) -> int:
  return {"+": x + y, "-": x - y, "*": x * y}[op] % modulus


def evaluate(tree: Tree, modulus: int, depth: int, steps: list[dict]) -> tuple[int, int]:
  """(value, operators in subtree); appends one record per operator to `steps`, post-order."""
  if isinstance(tree, int):
    return tree, 0
  op, left, right = tree
  x, left_ops = evaluate(left, modulus, depth, steps)
  left_index = len(steps) - 1
  y, right_ops = evaluate(right, modulus, depth + 1, steps)
  j = len(steps)
  reach = j - left_index if left_ops else 1 if right_ops else 0
  value = apply(op, x, y, modulus)
  steps.append({"value": value, "subtree_ops": left_ops + right_ops + 1,
                "operator": OPS.index(op), "stack_depth": 2 + depth, "reach": reach})
  return value, left_ops + right_ops + 1


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

  def generate(self, rng: np.random.Generator, size: int) -> Example:
    tree = random_tree(rng, size, self.modulus, self.ops)
    symbols = text(tree)
    steps = []
    evaluate(tree, self.modulus, 0, steps)
    answer = [s["value"] for s in steps]
    return Example(
        problem=" ".join(symbols),
        answer=answer,
        prompt_tokens=[self.token(s) for s in symbols],
        answer_tokens=[NUM_SPECIAL + v for v in answer],
        features={
            "num_ops": [size] * size,
            **{k: [s[k] for s in steps] for k in ("subtree_ops", "operator", "stack_depth",
                                                  "reach")},
        })
