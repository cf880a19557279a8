"""TFDS builders `anira_<task>`: array_record datasets with one split `size_<n>` per size.

Record i of split `size_<n>` is `task.examples(seed, n, count)[i]` encoded by `task.encode` at
length `task.seq_len(n)`: `inputs`, `targets` [L] int32, `loss_mask` [L] bool, `feature_<name>`
[L] float32 for every feature, and `json`, a JSON string {"problem": ..., "answer": ...}.
The dataset's metadata.json holds task, options, sizes, count, seed, vocab_size, seq_lens,
feature_kinds and main_feature. Examples are stored in generation order (shuffling disabled).

Reading needs neither TensorFlow nor this module:

    tfds.data_source("anira_sorting", data_dir=D, split="size_8")

reads the prepared files (TFDS restores a dataset from its files when no builder class of that
name is registered; importing this module registers one per task, which reads the same files).
Building: `build(task, sizes, count, data_dir, seed, options)` or `python -m anira_jax.tasks build`.
"""
import json
from typing import Any, Sequence

import numpy as np
import tensorflow_datasets as tfds
from etils import epath

from anira_jax import tasks

VERSION = "1.0.0"


def dataset_name(task: str) -> str:
  return f"anira_{task}"


def split_name(size: int) -> str:
  return f"size_{size}"


class AniraBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """Base of the per-task builders; `TASK` names the registry entry."""

  TASK = ""
  VERSION = tfds.core.Version(VERSION)

  @tfds.core.utils.classproperty
  @classmethod
  def code_path(cls) -> epath.Path:
    # TFDS's own lookup needs the `importlib_resources` backport, which this venv lacks.
    return epath.Path(__file__)

  def __init__(self, *, sizes: Sequence[int] = (), count: int = 0, seed: int = 0,
               options: dict[str, Any] | None = None, **kwargs):
    self.sizes, self.count, self.seed = [int(n) for n in sizes], int(count), int(seed)
    self.options = dict(options or {})
    self.task = tasks.get(self.TASK, **self.options)
    super().__init__(**kwargs)

  def _info(self) -> tfds.core.DatasetInfo:
    vector = lambda dtype: tfds.features.Tensor(shape=(None,), dtype=dtype)
    features = {"inputs": vector(np.int32), "targets": vector(np.int32),
                "loss_mask": vector(np.bool_), "json": tfds.features.Text()}
    features.update({f"feature_{k}": vector(np.float32) for k in self.task.feature_kinds})
    metadata = tfds.core.MetadataDict(
        task=self.TASK, options=self.options, sizes=self.sizes, count=self.count,
        seed=self.seed, vocab_size=self.task.vocab_size,
        seq_lens={str(n): self.task.seq_len(n) for n in self.sizes},
        feature_kinds=dict(self.task.feature_kinds), main_feature=self.task.main_feature)
    return tfds.core.DatasetInfo(
        builder=self, description=f"anira_jax task {self.TASK!r}, one split per size.",
        features=tfds.features.FeaturesDict(features), disable_shuffling=True,
        metadata=metadata)

  def _split_generators(self, dl_manager):
    if not self.sizes or self.count <= 0:
      raise ValueError(f"{self.name}: nothing prepared in {self.data_dir}; build it with "
                       f"`python -m anira_jax.tasks build --task {self.TASK} ...`")
    return {split_name(n): self._generate_examples(n) for n in self.sizes}

  def _generate_examples(self, size: int):
    examples = self.task.examples(self.seed, size, self.count)
    arrays = self.task.encode(examples, self.task.seq_len(size))
    for i, ex in enumerate(examples):
      record = {k: arrays[k][i] for k in ("inputs", "targets", "loss_mask")}
      record.update({f"feature_{k}": v[i] for k, v in arrays["features"].items()})
      record["json"] = json.dumps({"problem": ex.problem, "answer": ex.answer})
      yield i, record


BUILDERS: dict[str, type[AniraBuilder]] = {}
for _task in tasks.names():
  BUILDERS[_task] = type(f"Anira{_task.title()}", (AniraBuilder,), {
      "name": dataset_name(_task), "TASK": _task, "__module__": __name__})


def build(task: str, sizes: Sequence[int], count: int, data_dir: str, seed: int = 0,
          options: dict[str, Any] | None = None) -> str:
  """Generates (or regenerates) `anira_<task>` under data_dir; returns the dataset directory."""
  if len(set(sizes)) != len(sizes):
    raise ValueError(f"duplicate sizes in {list(sizes)}")
  builder = BUILDERS[task](data_dir=data_dir, file_format="array_record", sizes=sizes,
                           count=count, seed=seed, options=options)
  mode = tfds.download.GenerateMode.REUSE_CACHE_IF_EXISTS     # always write fresh data
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(download_mode=mode))
  return str(builder.data_dir)
