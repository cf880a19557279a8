"""data.py: training batches are a pure function of (seed, step); evaluation sets are fixed."""
import numpy as np
import pytest

from anira_jax import config as config_lib
from anira_jax import data
from anira_jax.tasks.base import CHUNK, PAD
from conftest import tiny_config


def _batch(seed, step, **overrides):
  cfg = tiny_config("anira_o", seed=seed, **overrides)
  return data.train_batch(cfg, config_lib.validate(cfg), step)


def _assert_batches_equal(a, b):
  assert a.keys() == b.keys()
  for k in a:
    np.testing.assert_array_equal(a[k], b[k])


def test_train_batch_is_pure_function_of_seed_and_step():
  later_first = _batch(0, 7)
  for step in (3, 5):
    _batch(0, step)   # other calls in between do not matter
  _assert_batches_equal(_batch(0, 7), later_first)
  _assert_batches_equal(_batch(0, 7, train__steps=5, model__k_max=2), later_first)
  assert not np.array_equal(_batch(0, 8)["inputs"], later_first["inputs"])
  assert not np.array_equal(_batch(1, 7)["inputs"], later_first["inputs"])


def test_rows_are_made_alone_and_equal_the_global_batch_rows():
  """Any slice of rows, made from the chunks that hold it alone, is those rows of the global
  batch (so every number of hosts feeds the same batch); chunks are not copies of each other."""
  cfg = tiny_config("anira_o", train__batch_size=2 * data.CHUNK + 88)
  task = config_lib.validate(cfg)
  whole = data.train_batch(cfg, task, 3)
  assert whole["inputs"].shape[0] == cfg.train.batch_size
  for rows in (slice(0, 300), slice(300, None), slice(data.CHUNK - 1, data.CHUNK + 1),
               slice(2 * data.CHUNK, 2 * data.CHUNK + 88), slice(5, 6)):
    _assert_batches_equal(data.train_batch(cfg, task, 3, rows),
                          {k: v[rows] for k, v in whole.items()})
  first, second = whole["inputs"][:data.CHUNK], whole["inputs"][data.CHUNK:2 * data.CHUNK]
  assert (first != second).any(axis=1).mean() > 0.9
  for bad in (slice(3, 3), slice(0, 10, 2)):
    with pytest.raises(ValueError, match="non-empty slice of consecutive rows"):
      data.train_batch(cfg, task, 3, bad)


@pytest.mark.parametrize("sizes", [(2, 4), (3, 3), (1, 5)])
def test_train_batch_sizes_and_shapes(sizes):
  cfg = tiny_config("fixed", task__train_sizes=sizes, train__batch_size=64)
  task = config_lib.validate(cfg)
  seen = set()
  for step in range(3):
    batch = data.train_batch(cfg, task, step)
    assert set(batch) == set(data.TRAIN_KEYS)
    length = task.seq_len(sizes[1])
    for k in ("inputs", "targets", "loss_mask"):
      assert batch[k].shape == (64, length), k
    assert batch["inputs"].dtype == np.int32 and batch["targets"].dtype == np.int32
    assert batch["loss_mask"].dtype == bool
    n = batch["loss_mask"].sum(axis=1)            # answer tokens = the size, for sorting
    np.testing.assert_array_equal((batch["inputs"] != PAD).sum(axis=1), 2 * n)
    assert n.min() >= sizes[0] and n.max() <= sizes[1]
    seen |= set(n.tolist())
    # Targets are the inputs shifted by one, on the real part of every row.
    real = batch["inputs"] != PAD
    np.testing.assert_array_equal(batch["targets"][:, :-1][real[:, 1:]],
                                  batch["inputs"][:, 1:][real[:, 1:]])
  assert seen == set(range(sizes[0], sizes[1] + 1))   # every size in range is drawn


@pytest.mark.parametrize("step,expected", [(0, 2), (2, 2), (3, 3), (5, 3), (6, 4), (8, 4),
                                           (9, 5), (11, 5), (12, 5), (1000, 5)])
def test_largest_size_grows_in_equal_stages(step, expected):
  # Sizes 2..5 over 12 steps: four stages of 3 steps each, then the full range.
  assert data.largest_size(2, 5, step, 12) == expected


def test_largest_size_without_curriculum_is_max():
  assert data.largest_size(2, 5, 0, 0) == 5


def test_curriculum_batches_hold_only_sizes_reached():
  cfg = tiny_config("fixed", task__train_sizes=(2, 5), task__curriculum_steps=40,
                    train__batch_size=64)
  task = config_lib.validate(cfg)
  answer_sizes = lambda step: set(data.train_batch(cfg, task, step)["loss_mask"].sum(1).tolist())
  assert answer_sizes(0) == {2}                       # sorting: answer tokens = the size
  assert answer_sizes(15) == {2, 3}
  assert answer_sizes(40) == {2, 3, 4, 5}
  assert data.train_batch(cfg, task, 0)["inputs"].shape == (64, task.seq_len(5))


def test_negative_curriculum_is_rejected():
  with pytest.raises(config_lib.ConfigError, match="task.curriculum_steps must be >= 0"):
    config_lib.validate(tiny_config("fixed", task__curriculum_steps=-1))


def test_eval_sets_independent_of_training_seed():
  a_cfg, b_cfg = tiny_config("anira_o", seed=0), tiny_config("anira_e", seed=123)
  a = data.eval_sets(a_cfg, config_lib.validate(a_cfg))
  b = data.eval_sets(b_cfg, config_lib.validate(b_cfg))
  assert list(a) == list(b) == [2, 4, 6]
  for size in a:
    for k in ("inputs", "targets", "loss_mask"):
      np.testing.assert_array_equal(a[size][k], b[size][k])
    assert a[size]["inputs"].shape == (16, 2 * size)
    np.testing.assert_array_equal(a[size]["loss_mask"].sum(1), size)
  c_cfg = tiny_config("anira_o", eval__seed=99)
  c = data.eval_sets(c_cfg, config_lib.validate(c_cfg))
  assert not np.array_equal(c[4]["inputs"], a[4]["inputs"])


def test_frozen_sets_equal_generated_ones_and_check_task_options(tmp_path):
  """eval.data_dir reads the TFDS sets of `tasks build` (same seed: the same examples, from a
  build of more examples too), and refuses a dataset built for other task options."""
  from anira_jax.tasks import tfds_builder
  cfg = tiny_config("anira_o")
  task = config_lib.validate(cfg)
  options = dict(cfg.task.options)
  tfds_builder.build("sorting", cfg.task.eval_sizes, cfg.eval.examples + CHUNK,
                     str(tmp_path / "same"), seed=cfg.eval.seed, options=options)
  generated = data.eval_sets(cfg, task)
  frozen_cfg = tiny_config("anira_o", eval__data_dir=str(tmp_path / "same"))
  frozen = data.eval_sets(frozen_cfg, config_lib.validate(frozen_cfg))
  assert list(frozen) == list(generated)
  for size in generated:
    for k in ("inputs", "targets", "loss_mask"):
      np.testing.assert_array_equal(frozen[size][k], generated[size][k])
    for name, values in generated[size]["features"].items():
      np.testing.assert_array_equal(frozen[size]["features"][name], values)
  tfds_builder.build("sorting", cfg.task.eval_sizes, cfg.eval.examples, str(tmp_path / "other"),
                     seed=cfg.eval.seed, options={**options, "num_values": 9})
  other_cfg = tiny_config("anira_o", eval__data_dir=str(tmp_path / "other"))
  with pytest.raises(ValueError, match="was built with task options .*num_values.: 9.*rebuild it "
                     "with python -m anira_jax.tasks build --task sorting --option num_values=16"):
    data.eval_sets(other_cfg, config_lib.validate(other_cfg))
