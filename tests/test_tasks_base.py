"""The Task interface every family shares: encoding into arrays, determinism, length bounds.

The checks run on every family `tasks.names()` finds, at the sizes `sizes(task)` picks;
`check_family(name)` runs them all on one family.
"""
import re
from typing import Sequence

import numpy as np
import pytest

from anira_jax import tasks
from anira_jax.tasks.base import CHUNK, PAD, SEP, Example

CANDIDATE_SIZES = (1, 2, 3, 5, 8, 16, 32, 64)
MAX_LEN = 256   # the default --max_len of `python -m anira_jax.tasks`


def sizes(task: tasks.Task) -> list[int]:
  """The task's minimum size and every candidate size it accepts with seq_len <= MAX_LEN."""
  def accepted(size: int) -> bool:
    try:
      task.check_size(size)
    except ValueError:
      return False
    return task.seq_len(size) <= MAX_LEN
  return sorted({task.min_size} | {s for s in CANDIDATE_SIZES if accepted(s)})


def assert_same_arrays(a: dict, b: dict) -> None:
  """Two batches as `Task.pack` returns them hold the same arrays."""
  assert a.keys() == b.keys() and a["features"].keys() == b["features"].keys()
  for key in ("inputs", "targets", "loss_mask"):
    assert a[key].dtype == b[key].dtype
    np.testing.assert_array_equal(a[key], b[key], err_msg=key)
  for name, values in a["features"].items():
    assert values.dtype == b["features"][name].dtype
    np.testing.assert_array_equal(values, b["features"][name], err_msg=name)


def mixed_examples(task: tasks.Task, sizes_: Sequence[int], per_size: int,
                   seed: int) -> list[tuple[int, Example]]:
  """(size, example) for `per_size` rows of each size, drawn together in one batch of mixed
  sizes (as training batches are), sizes interleaved."""
  sizes_B = np.tile(np.asarray(sizes_), per_size)
  drawn = task.draw(np.random.default_rng(seed), sizes_B, features=True)
  return list(zip(sizes_B.tolist(), task.view(drawn)))


def check_encoding(task: tasks.Task, size: int) -> None:
  batch, length = 8, task.seq_len(size)
  arrays = task.sample(3, size, batch)
  examples = task.examples(3, size, batch)
  assert arrays["inputs"].shape == arrays["targets"].shape == (batch, length)
  assert arrays["inputs"].dtype == arrays["targets"].dtype == np.int32
  assert arrays["loss_mask"].shape == (batch, length) and arrays["loss_mask"].dtype == bool
  assert arrays["inputs"].max() < task.vocab_size and arrays["targets"].max() < task.vocab_size
  assert set(arrays["features"]) == set(task.feature_kinds) == set(arrays["feature_kinds"])
  assert set(task.feature_kinds.values()) == {"structural", "execution"}
  assert task.feature_kinds[task.main_feature] == "execution"
  for b, ex in enumerate(examples):
    start, mask = len(ex.prompt_tokens), arrays["loss_mask"][b]
    assert len(ex.answer) == len(ex.answer_tokens) > 0
    assert np.flatnonzero(mask).tolist() == list(range(start, start + len(ex.answer)))
    assert arrays["inputs"][b, :start].tolist() == ex.prompt_tokens
    assert arrays["inputs"][b, start] == SEP
    assert arrays["targets"][b][mask].tolist() == ex.answer_tokens
    assert (arrays["inputs"][b, start + len(ex.answer):] == PAD).all()
    for feature, values in arrays["features"].items():
      assert values.shape == (batch, length) and values.dtype == np.float32
      assert (values[b][~mask] == 0).all()
      assert values[b][mask].tolist() == ex.features[feature]


def check_sample_is_encoded_examples(task: tasks.Task, size: int) -> None:
  """`sample` and `encode(examples)` come from one draw and hold the same arrays."""
  assert_same_arrays(task.sample(3, size, 8),
                     task.encode(task.examples(3, size, 8), task.seq_len(size)))


def check_prefixes(task: tasks.Task, size: int) -> None:
  """The first k examples of a count are those of count k (a frozen set of any count starts with
  the evaluation set), across chunk boundaries too."""
  longer = task.sample(3, size, CHUNK + 2)
  for count in (1, CHUNK + 1):
    first = {**longer, **{k: longer[k][:count] for k in ("inputs", "targets", "loss_mask")},
             "features": {k: v[:count] for k, v in longer["features"].items()}}
    assert_same_arrays(first, task.sample(3, size, count))


def check_mixed_sizes(task: tasks.Task) -> None:
  """A batch of mixed sizes (a training batch) packs as its examples encode, each row of its
  own size within its bound, and its rows differ."""
  found = sizes(task)
  drawn = task.draw(np.random.default_rng(0), np.tile(found, 4), features=True)
  examples = task.view(drawn)
  length = task.seq_len(max(found))
  assert_same_arrays(task.pack(drawn, length), task.encode(examples, length))
  for size, ex in zip(np.tile(found, 4).tolist(), examples):
    assert len(ex.prompt_tokens) + len(ex.answer_tokens) <= task.seq_len(size)
  assert len({tuple(ex.prompt_tokens) for ex in examples}) > len(examples) // 2
  without = task.draw(np.random.default_rng(0), np.tile(found, 4), features=False)
  np.testing.assert_array_equal(without.prompt_BxP, drawn.prompt_BxP)
  np.testing.assert_array_equal(without.answer_BxA, drawn.answer_BxA)
  assert not without.features


def check_seq_len_bound(task: tasks.Task, size: int) -> None:
  for ex in task.examples(1, size, 50):
    assert len(ex.prompt_tokens) + len(ex.answer_tokens) <= task.seq_len(size)


def check_same_seed_same_batch(task: tasks.Task, size: int) -> None:
  a, b, c = task.sample(5, size, 4), task.sample(5, size, 4), task.sample(6, size, 4)
  for key in ("inputs", "targets", "loss_mask"):
    np.testing.assert_array_equal(a[key], b[key])
  assert not np.array_equal(a["inputs"], c["inputs"])


def check_bad_sizes_and_counts(task: tasks.Task) -> None:
  with pytest.raises(ValueError, match="sizes >="):
    task.examples(0, task.min_size - 1, 1)
  with pytest.raises(ValueError, match="count must be positive"):
    task.examples(0, task.min_size, 0)


def check_registered(name: str) -> tasks.Task:
  """tasks.get(name) is a Task called `name`, with at least two sizes to check."""
  task = tasks.get(name)
  assert isinstance(task, tasks.Task) and task.name == name
  assert len(sizes(task)) >= 2, f"{name}: fewer than 2 sizes fit in {MAX_LEN} tokens"
  return task


def check_family(name: str) -> None:
  """Every check of this file on the family `name`."""
  task = check_registered(name)
  for size in sizes(task):
    check_encoding(task, size)
    check_sample_is_encoded_examples(task, size)
    check_seq_len_bound(task, size)
  check_prefixes(task, sizes(task)[-1])
  check_mixed_sizes(task)
  check_same_seed_same_batch(task, sizes(task)[-1])
  check_bad_sizes_and_counts(task)
  check_decode(task, sizes(task)[-1])


def check_decode(task: tasks.Task, size: int) -> None:
  """Answer tokens decode to the answer exactly; every id in the vocabulary decodes, and one
  past it is refused."""
  for ex in task.examples(3, size, 8):
    assert task.decode(ex.answer_tokens) == ex.answer
    assert len(task.decode(ex.prompt_tokens + [tasks.SEP])) == len(ex.prompt_tokens) + 1
  assert len(task.decode(range(task.vocab_size))) == task.vocab_size
  with pytest.raises(ValueError, match=f"token id {task.vocab_size} is outside the vocabulary"):
    task.decode([task.vocab_size])


CASES = [(name, size) for name in tasks.names() for size in sizes(tasks.get(name))]


@pytest.mark.parametrize("name", tasks.names())
def test_each_module_is_the_family_of_its_name(name):
  check_registered(name)


@pytest.mark.parametrize("name,size", CASES)
def test_sample_encodes_examples(name, size):
  check_encoding(tasks.get(name), size)


@pytest.mark.parametrize("name,size", CASES)
def test_sample_is_the_encoding_of_examples(name, size):
  check_sample_is_encoded_examples(tasks.get(name), size)


@pytest.mark.parametrize("name", tasks.names())
def test_first_examples_do_not_depend_on_the_count(name):
  task = tasks.get(name)
  check_prefixes(task, sizes(task)[-1])


@pytest.mark.parametrize("name", tasks.names())
def test_mixed_sizes_in_one_draw(name):
  check_mixed_sizes(tasks.get(name))


@pytest.mark.parametrize("name", tasks.names())
def test_same_seed_same_batch(name):
  task = tasks.get(name)
  check_same_seed_same_batch(task, sizes(task)[-1])


@pytest.mark.parametrize("name,size", CASES)
def test_seq_len_bounds_every_example(name, size):
  check_seq_len_bound(tasks.get(name), size)


@pytest.mark.parametrize("name", tasks.names())
def test_bad_sizes_and_counts_raise(name):
  check_bad_sizes_and_counts(tasks.get(name))


@pytest.mark.parametrize("name", tasks.names())
def test_answer_tokens_decode_to_the_answer(name):
  task = tasks.get(name)
  check_decode(task, sizes(task)[-1])


def test_unknown_task_and_option_name_the_problem():
  assert tasks.names()
  with pytest.raises(ValueError, match=re.escape(f"valid tasks: {', '.join(tasks.names())}")):
    tasks.get("nope")
  with pytest.raises(ValueError, match="unknown task 'base'"):
    tasks.get("base")
  with pytest.raises(ValueError, match="bad options for task 'sorting'"):
    tasks.get("sorting", colour=3)
