"""Batches: training batches are a pure function of (seed, step); evaluation sets are fixed."""
import dataclasses
import json

import ml_collections
import numpy as np

from anira_jax import tasks

TRAIN_KEYS = ("inputs", "targets", "loss_mask")
CHUNK = 256   # rows of a training batch drawn together (see train_batch)


def largest_size(lo: int, hi: int, step: int, curriculum_steps: int) -> int:
  """The largest training size drawn at `step`: lo at step 0, then one more at each of
  hi - lo + 1 equal stages of the curriculum, and hi from `curriculum_steps` on (always when 0)."""
  if step >= curriculum_steps:
    return hi
  return lo + (hi - lo + 1) * step // curriculum_steps


def train_batch(cfg: ml_collections.ConfigDict, task: tasks.Task, step: int,
                rows: slice = slice(None)) -> dict:
  """Rows `rows` (default all) of the global training batch of `step`: sizes uniform from the
  smallest training size up to `largest_size`, padded to the longest training size so one
  compiled step serves them all. The sizes of the whole batch come from the step's generator;
  the examples are drawn in chunks of CHUNK rows, chunk c from its own generator (step seed, c),
  so the rows are made from the chunks that hold them alone and are the same whatever the slice.
  Resuming at `step` sees exactly the batch an uninterrupted run would."""
  lo, hi = cfg.task.train_sizes
  for size in (lo, hi):   # an unvalidated config reaches here too (e.g. in a data worker)
    task.check_size(size)
  rng = np.random.default_rng([cfg.seed, step])
  top = largest_size(lo, hi, step, cfg.task.curriculum_steps)
  sizes = rng.integers(lo, top + 1, cfg.train.batch_size)
  step_seed = int(rng.integers(2**31))
  start, stop, stride = rows.indices(len(sizes))
  if stride != 1 or start >= stop:
    raise ValueError(f"rows must be a non-empty slice of consecutive rows of the batch of "
                     f"{len(sizes)}, got {rows}")
  chunks = range(start // CHUNK, (stop - 1) // CHUNK + 1)
  parts = [task.pack(task.draw(np.random.default_rng([step_seed, c]),
                               sizes[c * CHUNK:(c + 1) * CHUNK], features=False),
                     task.seq_len(hi)) for c in chunks]
  kept = slice(start - chunks[0] * CHUNK, stop - chunks[0] * CHUNK)
  return {k: np.concatenate([part[k] for part in parts])[kept] for k in TRAIN_KEYS}


def eval_sets(cfg: ml_collections.ConfigDict, task: tasks.Task) -> dict[int, dict]:
  """One fixed batch of cfg.eval.examples per evaluation size (independent of cfg.seed): read
  from the frozen TFDS dataset under cfg.eval.data_dir when set, else generated."""
  if cfg.eval.data_dir:
    return {int(size): frozen_set(cfg.eval.data_dir, task, int(size), cfg.eval.examples)
            for size in cfg.task.eval_sizes}
  return {int(size): task.sample(cfg.eval.seed, int(size), cfg.eval.examples)
          for size in cfg.task.eval_sizes}


def frozen_set(data_dir: str, task: tasks.Task, size: int, count: int) -> dict:
  """The first `count` examples of split size_<size> of the TFDS dataset anira_<task>, built by
  `python -m anira_jax.tasks build`, as a batch like `task.sample` returns."""
  import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel
  name, split = f"anira_{task.name}", f"size_{size}"
  try:
    source = tfds.data_source(name, data_dir=data_dir, split=split)
  except Exception as e:  # pylint: disable=broad-except
    raise ValueError(f"cannot read {name} split {split} from {data_dir} ({type(e).__name__}); "
                     f"build it with python -m anira_jax.tasks build --task {task.name} "
                     f"--sizes ... --data_dir {data_dir}") from None
  built = dict(source.dataset_info.metadata.get("options", {}))
  if tasks.get(task.name, **built) != task:
    flags = " ".join(f"--option {k}={v if isinstance(v, str) else json.dumps(v)}"
                     for k, v in dataclasses.asdict(task).items())
    raise ValueError(f"{name} in {data_dir} was built with task options {built}, which differ "
                     f"from the config's {dataclasses.asdict(task)}; rebuild it with python -m "
                     f"anira_jax.tasks build --task {task.name} {flags} --sizes ... "
                     f"--data_dir {data_dir}")
  if len(source) < count:
    raise ValueError(f"{name} split {split} in {data_dir} has {len(source)} examples, "
                     f"fewer than eval.examples {count}")
  records = [source[i] for i in range(count)]
  stack = lambda key: np.stack([r[key] for r in records])
  return {"inputs": stack("inputs"), "targets": stack("targets"),
          "loss_mask": stack("loss_mask"),
          "features": {k: stack(f"feature_{k}") for k in task.feature_kinds},
          "feature_kinds": dict(task.feature_kinds)}
