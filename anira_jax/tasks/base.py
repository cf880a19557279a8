"""The task interface: every task family turns (seed, size, batch) into padded arrays.

A task generates one `Example` at a time from a NumPy generator; `Task.sample` encodes a batch
of them as a decoder-only next-token problem:

    tokens  = prompt_tokens + [SEP] + answer_tokens
    inputs  = tokens[:-1]        targets = tokens[1:]

padded with PAD to `seq_len(size)`. Feature alignment convention: `features[name][b, i]`
describes the *target* token predicted at position i, with the same indexing as `targets[b, i]`
and `loss_mask[b, i]` (so it pairs directly with `depth[b, i]` from the model). Answer token j
is the target at position `len(prompt_tokens) + j`. Features are 0 outside the answer.
"""
import abc
import dataclasses
from typing import Any, Literal, Mapping, Sequence

import numpy as np

PAD = 0
SEP = 1
NUM_SPECIAL = 2

FeatureKind = Literal["structural", "execution"]


@dataclasses.dataclass(frozen=True)
class Example:
  problem: Any                       # human-readable problem (JSON-serialisable)
  answer: list                       # human-readable answer, one entry per answer token
  prompt_tokens: list[int]
  answer_tokens: list[int]
  features: dict[str, list[float]]   # one value per answer token


class Task(abc.ABC):
  """A complexity-controlled task family whose difficulty is an integer `size`."""

  name: str
  vocab_size: int                     # including PAD and SEP
  min_size: int
  feature_kinds: Mapping[str, FeatureKind]
  main_feature: str                   # the execution feature analyses look at first

  @abc.abstractmethod
  def generate(self, rng: np.random.Generator, size: int) -> Example:
    """One random example of the given size."""

  @abc.abstractmethod
  def seq_len(self, size: int) -> int:
    """Upper bound on len(inputs) for any example of this size."""

  @abc.abstractmethod
  def symbol(self, index: int) -> Any:
    """What token NUM_SPECIAL + index stands for, as `Example.answer` writes it (an answer
    token's symbol is its entry of the answer)."""

  def decode(self, tokens: Sequence[int]) -> list:
    """The human-readable form of token ids: each token's symbol, PAD "<pad>", SEP "|"."""
    out = []
    for token in map(int, tokens):
      if not 0 <= token < self.vocab_size:
        raise ValueError(f"token id {token} is outside the vocabulary [0, {self.vocab_size}) of "
                         f"task {self.name!r}")
      out.append({PAD: "<pad>", SEP: "|"}[token] if token < NUM_SPECIAL
                 else self.symbol(token - NUM_SPECIAL))
    return out

  def check_size(self, size: int) -> None:
    if int(size) != size or size < self.min_size:
      raise ValueError(f"task {self.name!r} needs integer sizes >= {self.min_size}, got {size}")

  def examples(self, seed: int, size: int, count: int) -> list[Example]:
    """`count` examples, a pure function of (seed, size, count)."""
    self.check_size(size)
    if count <= 0:
      raise ValueError(f"count must be positive, got {count}")
    rng = np.random.default_rng([seed, size])
    return [self.generate(rng, size) for _ in range(count)]

  def sample(self, seed: int, size: int, batch: int) -> dict:
    """A batch as arrays: inputs/targets [B, L] int32, loss_mask [B, L] bool, features."""
    return self.encode(self.examples(seed, size, batch), self.seq_len(size))

  def encode(self, examples: Sequence[Example], length: int) -> dict:
    batch = len(examples)
    inputs = np.full((batch, length), PAD, np.int32)
    targets = np.full((batch, length), PAD, np.int32)
    loss_mask = np.zeros((batch, length), bool)
    features = {k: np.zeros((batch, length), np.float32) for k in self.feature_kinds}
    for b, ex in enumerate(examples):
      tokens = ex.prompt_tokens + [SEP] + ex.answer_tokens
      if len(tokens) - 1 > length:
        raise ValueError(f"{self.name}: example needs length {len(tokens) - 1} > {length}")
      n = len(tokens) - 1
      inputs[b, :n] = tokens[:-1]
      targets[b, :n] = tokens[1:]
      start = len(ex.prompt_tokens)
      answer = slice(start, start + len(ex.answer_tokens))
      loss_mask[b, answer] = True
      for k in self.feature_kinds:
        features[k][b, answer] = ex.features[k]
    return dict(inputs=inputs, targets=targets, loss_mask=loss_mask, features=features,
                feature_kinds=dict(self.feature_kinds))
