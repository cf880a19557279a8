"""The task interface: every task family turns (seed, size, count) into padded arrays.

A family draws many examples at once, as NumPy arrays with one row per example (`Task.draw`
returns a `Drawn`: prompt and answer tokens, and the answer tokens' features when asked for;
each row has its own size). `Task.pack` encodes them as a decoder-only next-token problem:

    tokens  = prompt_tokens + [SEP] + answer_tokens
    inputs  = tokens[:-1]        targets = tokens[1:]

padded with PAD to a given length (`Task.sample`: `seq_len(size)`). `Task.examples` shows the same
draw one `Example` per row: the problem read back from the prompt tokens (`Task.problem`), the
answer from the answer tokens (`Task.decode`). Feature alignment convention: `features[name][b,
i]` describes the *target* token predicted at position i, with the same indexing as `targets[b,
i]` and `loss_mask[b, i]` (so it pairs directly with `depth[b, i]` from the model). Answer token
j is the target at position `len(prompt_tokens) + j`. Features are 0 outside the answer.
"""
import abc
import dataclasses
from typing import Any, Literal, Mapping, Sequence

import numpy as np

PAD = 0
SEP = 1
NUM_SPECIAL = 2
CHUNK = 64   # examples `Task.drawn` draws together, chunk c from the generator (seed, size, c)

FeatureKind = Literal["structural", "execution"]


@dataclasses.dataclass(frozen=True)
class Example:
  problem: Any                       # human-readable problem (JSON-serialisable)
  answer: list                       # human-readable answer, one entry per answer token
  prompt_tokens: list[int]
  answer_tokens: list[int]
  features: dict[str, list[float]]   # one value per answer token


@dataclasses.dataclass(frozen=True)
class Drawn:
  """Examples as arrays, one row each: every row's tokens first, PAD after them (a real token is
  never PAD); features[name][b, j] describes answer token j of row b (0 past the answer), and
  is empty when the features were not asked for."""
  prompt_BxP: np.ndarray
  answer_BxA: np.ndarray
  features: Mapping[str, np.ndarray] = dataclasses.field(default_factory=dict)


def lengths(tokens_BxT: np.ndarray) -> np.ndarray:
  """Tokens before the padding, per row."""
  return (tokens_BxT != PAD).sum(axis=1)


def stacked(arrays: Sequence[np.ndarray]) -> np.ndarray:
  """The arrays' rows one after the other, each array padded with 0 (PAD) to the widest."""
  width = max(a.shape[1] for a in arrays)
  return np.concatenate([np.pad(a, ((0, 0), (0, width - a.shape[1]))) for a in arrays])


def padded(rows: Sequence[Sequence[float]], dtype: type = np.int32) -> np.ndarray:
  """The rows as one array, each row's values first, 0 (PAD) after them."""
  out = np.zeros((len(rows), max(map(len, rows))), dtype)
  for b, row in enumerate(rows):
    out[b, :len(row)] = row
  return out


class Task(abc.ABC):
  """A complexity-controlled task family whose difficulty is an integer `size`."""

  name: str
  vocab_size: int                     # including PAD and SEP
  min_size: int
  feature_kinds: Mapping[str, FeatureKind]
  main_feature: str                   # the execution feature analyses look at first

  @abc.abstractmethod
  def draw(self, rng: np.random.Generator, sizes_B: np.ndarray, features: bool) -> Drawn:
    """One random example per entry of `sizes_B` (valid sizes), each row drawn from the family's
    distribution at its size; the features only if `features`."""

  @abc.abstractmethod
  def problem(self, prompt_tokens: Sequence[int]) -> Any:
    """The human-readable problem (`Example.problem`) that `prompt_tokens` write."""

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

  def drawn(self, seed: int, size: int, count: int, features: bool = True) -> Drawn:
    """`count` examples of one size, a pure function of (seed, size, count): drawn CHUNK at a
    time, chunk c from the generator (seed, size, c), so the first k of any count are those of
    count k."""
    self.check_size(size)
    if count <= 0:
      raise ValueError(f"count must be positive, got {count}")
    parts = [self.draw(np.random.default_rng([seed, size, c]), np.full(CHUNK, size), features)
             for c in range(-(-count // CHUNK))]
    return Drawn(stacked([p.prompt_BxP for p in parts])[:count],
                 stacked([p.answer_BxA for p in parts])[:count],
                 {k: stacked([p.features[k] for p in parts])[:count] for k in parts[0].features})

  def examples(self, seed: int, size: int, count: int) -> list[Example]:
    """The rows of `drawn(seed, size, count)`, one `Example` each."""
    return self.view(self.drawn(seed, size, count))

  def view(self, drawn: Drawn) -> list[Example]:
    """Every row of `drawn` as an `Example`."""
    prompts = [row[row != PAD].tolist() for row in drawn.prompt_BxP]
    answers = [row[row != PAD].tolist() for row in drawn.answer_BxA]
    features = {k: v.tolist() for k, v in drawn.features.items()}
    return [Example(problem=self.problem(prompt), answer=self.decode(answer),
                    prompt_tokens=prompt, answer_tokens=answer,
                    features={k: v[b][:len(answer)] for k, v in features.items()})
            for b, (prompt, answer) in enumerate(zip(prompts, answers))]

  def sample(self, seed: int, size: int, batch: int) -> dict:
    """A batch as arrays: inputs/targets [B, L] int32, loss_mask [B, L] bool, features."""
    return self.pack(self.drawn(seed, size, batch), self.seq_len(size))

  def encode(self, examples: Sequence[Example], length: int) -> dict:
    """`examples` as `pack` writes them (the arrays `sample` returns for the examples it draws)."""
    return self.pack(Drawn(
        prompt_BxP=padded([ex.prompt_tokens for ex in examples]),
        answer_BxA=padded([ex.answer_tokens for ex in examples]),
        features={k: padded([ex.features[k] for ex in examples], np.float32)
                  for k in self.feature_kinds}), length)

  def pack(self, drawn: Drawn, length: int) -> dict:
    """inputs/targets [B, length] int32 (prompt + [SEP] + answer, shifted by one, PAD after),
    loss_mask [B, length] bool on the answer's targets, and the drawn features there."""
    prompt_len_B, answer_len_B = lengths(drawn.prompt_BxP), lengths(drawn.answer_BxA)
    if (prompt_len_B + answer_len_B > length).any():
      raise ValueError(f"{self.name}: example needs length "
                       f"{(prompt_len_B + answer_len_B).max()} > {length}")
    batch = len(prompt_len_B)
    tokens_BxT = np.full((batch, length + 1), PAD, np.int32)
    width = min(drawn.prompt_BxP.shape[1], length + 1)   # only padding lies beyond `length`
    tokens_BxT[:, :width] = drawn.prompt_BxP[:, :width]
    tokens_BxT[np.arange(batch), prompt_len_B] = SEP
    rows, cols = np.nonzero(drawn.answer_BxA != PAD)
    at = prompt_len_B[rows] + cols                        # the target index of each answer token
    tokens_BxT[rows, at + 1] = drawn.answer_BxA[rows, cols]
    loss_mask = np.zeros((batch, length), bool)
    loss_mask[rows, at] = True
    features = {}
    for k, values_BxA in drawn.features.items():
      features[k] = np.zeros((batch, length), np.float32)
      features[k][rows, at] = values_BxA[rows, cols]
    inputs = np.where(np.arange(length) < (prompt_len_B + answer_len_B)[:, None],
                      tokens_BxT[:, :-1], PAD)            # every token but the last
    return dict(inputs=inputs.astype(np.int32), targets=tokens_BxT[:, 1:], loss_mask=loss_mask,
                features=features, feature_kinds=dict(self.feature_kinds))
