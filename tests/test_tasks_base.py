"""The Task interface every family shares: encoding into arrays, determinism, length bounds."""
import numpy as np
import pytest

from anira_jax import tasks
from anira_jax.tasks.base import PAD, SEP

SIZES = {"sorting": (1, 2, 5, 12), "graph": (1, 2, 4, 9, 16), "dyck": (1, 2, 3, 8, 20, 60),
         "addition": (1, 2, 5, 12, 40), "modarith": (1, 2, 3, 7, 20, 50),
         "chase": (1, 2, 5, 8, 16)}
CASES = [(name, size) for name in tasks.names() for size in SIZES[name]]


def test_every_task_has_sizes_here():
  assert sorted(SIZES) == tasks.names()


@pytest.mark.parametrize("name,size", CASES)
def test_sample_encodes_examples(name, size):
  task = tasks.get(name)
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


@pytest.mark.parametrize("name", tasks.names())
def test_same_seed_same_batch(name):
  task = tasks.get(name)
  size = SIZES[name][2]
  a, b, c = task.sample(5, size, 4), task.sample(5, size, 4), task.sample(6, size, 4)
  for key in ("inputs", "targets", "loss_mask"):
    np.testing.assert_array_equal(a[key], b[key])
  assert not np.array_equal(a["inputs"], c["inputs"])


@pytest.mark.parametrize("name,size", CASES)
def test_seq_len_bounds_every_example(name, size):
  task = tasks.get(name)
  for ex in task.examples(1, size, 50):
    assert len(ex.prompt_tokens) + len(ex.answer_tokens) <= task.seq_len(size)


@pytest.mark.parametrize("name", tasks.names())
def test_bad_sizes_and_counts_raise(name):
  task = tasks.get(name)
  with pytest.raises(ValueError, match="sizes >="):
    task.examples(0, task.min_size - 1, 1)
  with pytest.raises(ValueError, match="count must be positive"):
    task.examples(0, task.min_size, 0)


def test_unknown_task_and_option_name_the_problem():
  with pytest.raises(ValueError,
                     match="valid tasks: addition, chase, dyck, graph, modarith, sorting"):
    tasks.get("nope")
  with pytest.raises(ValueError, match="bad options for task 'sorting'"):
    tasks.get("sorting", colour=3)
