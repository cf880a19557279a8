"""Chase: the value of every variable of a program of assignments, by following references.

Program (n = size variables): n distinct names drawn uniformly from the pool 0..num_vars-1 in a
hidden definition order i = 0..n-1. Variable 0 is assigned a constant; every later variable i
is assigned a constant with probability `const_prob`, else a parent variable uniform among the
variables 0..i-1. Constants are uniform in 0..num_values-1. The assignments are written in a
uniformly random order, so the prompt order is not the definition order, and all n variables are
queried in another uniformly random order.

Problem {"assignments": [["v3", "v7"], ["v7", 5], ...], "queries": ["v7", "v3", ...]}, with
variable v written "v<v>" and constants as ints. Answer: the value (a constant) of each queried
variable, in query order. Tokens: constant c -> 2 + c, variable v -> 2 + num_values + v, QUERY
-> 2 + num_values + num_vars; vocab_size = 3 + num_values + num_vars. Prompt: "lhs rhs" for
every assignment in prompt order, then QUERY and the n queried variables: 3n + 1 tokens.
seq_len(n) = 4n + 1, reached by every example.

Chain of variable q: q = x_0, x_1, ..., x_h where x_{k+1} is the right-hand side of x_k and x_h
is the first variable assigned a constant (its value is the value of q). Features of answer
token j, the queried variable q:
  num_vars (structural)     n.
  referenced (structural)   assignments whose right-hand side is q.
  hops (execution)          h: links followed from q to a constant (0 if q is assigned one).
  fresh_hops (execution)    links followed from q to the first x_k that is assigned a constant or
                            was queried before j (so its value is already in the answer): the
                            smallest k with x_k among the queries 0..j-1, else h. 0 iff h = 0
                            (q itself is queried at j, not before); fresh_hops <= hops.
"""
import collections
import dataclasses

import numpy as np

from anira_jax.tasks.base import NUM_SPECIAL, Example, Task

Rhs = tuple[int, bool]              # (constant or variable, is_variable)


def random_program(rng: np.random.Generator, n: int, num_vars: int, num_values: int,
                   const_prob: float) -> dict[int, Rhs]:
  """Right-hand side of each of n variables, keyed in definition order (module docstring)."""
  names = rng.choice(num_vars, n, replace=False).tolist()
  program = {}
  for i, name in enumerate(names):
    if i == 0 or rng.random() < const_prob:
      program[name] = (int(rng.integers(num_values)), False)
    else:
      program[name] = (names[rng.integers(i)], True)
  return program


def text(value: int, is_variable: bool) -> str | int:
  """A right-hand side as the problem writes it: "v<value>" for a variable, else the int."""
  return f"v{value}" if is_variable else value


def chain(program: dict[int, Rhs], q: int) -> list[int]:
  """x_0 = q, x_1, ..., x_h: right-hand sides followed up to the first constant-assigned one."""
  path = [q]
  while program[path[-1]][1]:
    path.append(program[path[-1]][0])
  return path


@dataclasses.dataclass(frozen=True)
class Chase(Task):
  num_vars: int = 16
  num_values: int = 8
  const_prob: float = 0.2

  name = "chase"
  min_size = 1
  main_feature = "hops"
  feature_kinds = {"num_vars": "structural", "referenced": "structural",
                   "hops": "execution", "fresh_hops": "execution"}

  def __post_init__(self):
    if self.num_vars < 1 or self.num_values < 1 or not 0 <= self.const_prob <= 1:
      raise ValueError(f"chase needs num_vars >= 1, num_values >= 1, 0 <= const_prob <= 1; "
                       f"got {self}")

  @property
  def query_token(self) -> int:
    return NUM_SPECIAL + self.num_values + self.num_vars

  @property
  def vocab_size(self) -> int:
    return NUM_SPECIAL + self.num_values + self.num_vars + 1

  def token(self, value: int, is_variable: bool) -> int:
    return NUM_SPECIAL + (self.num_values if is_variable else 0) + value

  def check_size(self, size: int) -> None:
    super().check_size(size)
    if size > self.num_vars:
      raise ValueError(f"task 'chase' needs sizes <= num_vars={self.num_vars}, got {size}")

  def seq_len(self, size: int) -> int:
    return 4 * size + 1

  def generate(self, rng: np.random.Generator, size: int) -> Example:
    program = random_program(rng, size, self.num_vars, self.num_values, self.const_prob)
    names = list(program)
    written = [names[i] for i in rng.permutation(size)]
    queries = [names[i] for i in rng.permutation(size)]
    return self.example(program, written, queries)

  def example(self, program: dict[int, Rhs], written: list[int], queries: list[int]) -> Example:
    """The example for `program` with assignments in the order `written`, queried as `queries`."""
    paths = [chain(program, q) for q in queries]
    answer = [program[path[-1]][0] for path in paths]
    references = collections.Counter(v for v, is_variable in program.values() if is_variable)
    prompt = []
    for lhs in written:
      prompt += [self.token(lhs, True), self.token(*program[lhs])]
    prompt += [self.query_token] + [self.token(q, True) for q in queries]
    return Example(
        problem={"assignments": [[text(lhs, True), text(*program[lhs])] for lhs in written],
                 "queries": [text(q, True) for q in queries]},
        answer=answer,
        prompt_tokens=prompt,
        answer_tokens=[self.token(v, False) for v in answer],
        features={
            "num_vars": [len(program)] * len(queries),
            "referenced": [references[q] for q in queries],
            "hops": [len(path) - 1 for path in paths],
            "fresh_hops": [min((k for k, x in enumerate(path) if x in queries[:j]),
                               default=len(path) - 1) for j, path in enumerate(paths)],
        })
