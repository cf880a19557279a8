"""Batches: training batches are a pure function of (seed, step); evaluation sets are fixed."""
import ml_collections
import numpy as np

from anira_jax import tasks

TRAIN_KEYS = ("inputs", "targets", "loss_mask")


def train_batch(cfg: ml_collections.ConfigDict, task: tasks.Task, step: int) -> dict:
  """The global training batch of `step`: sizes uniform in task.train_sizes, padded to the
  longest training size so one compiled step serves them all. Resuming at `step` sees exactly
  the batch an uninterrupted run would."""
  lo, hi = cfg.task.train_sizes
  rng = np.random.default_rng([cfg.seed, step])
  sizes = rng.integers(lo, hi + 1, cfg.train.batch_size)
  step_seed = int(rng.integers(2**31))
  examples = [None] * len(sizes)
  for size in np.unique(sizes):
    where = np.flatnonzero(sizes == size)
    for i, ex in zip(where, task.examples(step_seed, int(size), len(where))):
      examples[i] = ex
  batch = task.encode(examples, task.seq_len(hi))
  return {k: batch[k] for k in TRAIN_KEYS}


def eval_sets(cfg: ml_collections.ConfigDict, task: tasks.Task) -> dict[int, dict]:
  """One fixed batch of cfg.eval.examples per evaluation size (independent of cfg.seed)."""
  return {int(size): task.sample(cfg.eval.seed, int(size), cfg.eval.examples)
          for size in cfg.task.eval_sizes}
