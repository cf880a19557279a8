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
import collections
import dataclasses

import numpy as np

from anira_jax.tasks.base import NUM_SPECIAL, Example, Task

Rhs = tuple[int, bool]              # (constant or variable, is_variable)


def random_chains(rng: np.random.Generator, n: int, num_vars: int,
                  num_chains: int) -> list[list[int]]:
  """min(num_chains, n) chains of distinct names, root first, lengths within one of each other."""
  names = rng.choice(num_vars, n, replace=False).tolist()
  count = min(num_chains, n)
  return [names[k::count] for k in range(count)]


def program_of(chains: list[list[int]], constants: list[int]) -> dict[int, Rhs]:
  """Right-hand side of every name: each chain's root its constant, the others their parent."""
  program = {}
  for names, constant in zip(chains, constants):
    program[names[0]] = (constant, False)
    program.update({child: (parent, True) for parent, child in zip(names, names[1:])})
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

  def token(self, value: int, is_variable: bool) -> int:
    return NUM_SPECIAL + (self.num_values if is_variable else 0) + value

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

  def generate(self, rng: np.random.Generator, size: int) -> Example:
    chains = random_chains(rng, size, self.num_vars, self.num_chains)
    constants = rng.choice(self.num_values, len(chains), replace=False).tolist()
    program = program_of(chains, constants)
    names = list(program)
    written = [names[i] for i in rng.permutation(size)]
    return self.example(program, written, names[rng.integers(size)])

  def example(self, program: dict[int, Rhs], written: list[int], query: int) -> Example:
    """The example for `program` with assignments in the order `written`, asking for `query`."""
    path = chain(program, query)
    value = program[path[-1]][0]
    references = collections.Counter(v for v, is_variable in program.values() if is_variable)
    prompt = []
    for lhs in written:
      prompt += [self.token(lhs, True), self.token(*program[lhs])]
    prompt += [self.query_token, self.token(query, True)]
    return Example(
        problem={"assignments": [[text(lhs, True), text(*program[lhs])] for lhs in written],
                 "query": text(query, True)},
        answer=[value],
        prompt_tokens=prompt,
        answer_tokens=[self.token(value, False)],
        features={"num_vars": [len(program)], "referenced": [references[query]],
                  "hops": [len(path) - 1]})
