"""The training loop's tools: the loop's own config fields, a profiler window, TensorBoard scalars,
and the training curves of a run."""
import gzip
import json
import pathlib
import shutil
import struct
import sys

import numpy as np
import pytest

from anira_jax import config as config_lib, evaluate, plots, train
from anira_jax.errors import UserError
from conftest import tiny_config


@pytest.mark.parametrize("field,value,message", [
    ("data_workers", -1, "train.data_workers must be an integer >= 0 (0: batches made in the "
                         "loop), got -1"),
    ("prefetch", 0, "train.prefetch must be an integer >= 1, got 0"),
    ("profile_steps", (3, 1), "train.profile_steps must be () (off) or (start, stop) with "
                              "0 <= start < stop, got (3, 1)"),
    ("profile_steps", (2,), "train.profile_steps must be () (off) or (start, stop) with "
                            "0 <= start < stop, got (2,)"),
])
def test_loop_fields_are_checked_before_anything_is_written(tmp_path, field, value, message):
  cfg = tiny_config("anira_o", **{f"train__{field}": value})
  with pytest.raises(config_lib.ConfigError) as e:
    train.train_and_evaluate(cfg, str(tmp_path / "run"))
  assert str(e.value) == message
  assert not (tmp_path / "run").exists()


def test_profile_window_writes_a_trace_of_those_steps(tmp_path):
  cfg = tiny_config("anira_o", train__steps=4, train__log_every=2, train__profile_steps=(1, 3))
  train.train_and_evaluate(cfg, str(tmp_path))
  runs = list((tmp_path / "profile" / "plugins" / "profile").iterdir())
  assert len(runs) == 1, runs   # one window, one trace
  names = {p.name for p in runs[0].iterdir()}
  assert any(n.endswith(".xplane.pb") for n in names), names   # TensorBoard's profile plugin
  with gzip.open(runs[0] / "perfetto_trace.json.gz") as f:      # ui.perfetto.dev
    events = json.load(f)["traceEvents"]
  steps = [e["args"]["step_num"] for e in events if e.get("name") == "train"]
  assert steps == ["2", "3"]   # the steps from state 1 to state 3, numbered as logged
  assert any(e.get("name") == "PjitFunction(train)" for e in events)


def _event_files(logdir: pathlib.Path) -> list[list]:
  """The events of each event file in logdir, in the order TensorBoard reads them (by name), read
  without TensorBoard: TFRecords of an 8-byte little-endian length, its CRC, the payload (an
  Event), the payload's CRC."""
  from tensorboardX.proto import event_pb2  # pylint: disable=import-outside-toplevel
  files = []
  for path in sorted(logdir.glob("events.out.tfevents.*")):
    data, at, events = path.read_bytes(), 0, []
    while at < len(data):
      (length,) = struct.unpack("<Q", data[at:at + 8])
      events.append(event_pb2.Event.FromString(data[at + 12:at + 12 + length]))
      at += 12 + length + 4
    files.append(events)
  return files


def _jsonl(path: pathlib.Path) -> list[dict]:
  return [json.loads(line) for line in path.read_text().splitlines()]


def test_tensorboard_scalars_are_the_logged_metrics_and_evaluations(tmp_path):
  """4 steps, logged and evaluated every 2, then resumed to 6: the scalars TensorBoard shows are
  those of metrics.jsonl ("train/") and evals.jsonl ("eval/"), each step once."""
  run = lambda steps: train.train_and_evaluate(tiny_config(
      "anira_o", train__steps=steps, train__log_every=2, train__eval_every=2,
      train__tensorboard=True), str(tmp_path))
  run(4)
  run(6)
  first, resumed = _event_files(tmp_path / "tensorboard")
  points = lambda events: {(v.tag, e.step): v.simple_value for e in events for v in e.summary.value}
  assert [e.step for e in resumed if e.session_log.status == e.session_log.START] == [5]
  assert {step for _, step in points(resumed)} == {6}   # the resumed run's points only
  shown = {**{k: v for k, v in points(first).items() if k[1] < 5}, **points(resumed)}

  expected = {}
  for record in _jsonl(tmp_path / "metrics.jsonl"):
    expected.update({(f"train/{k}", record["step"]): v for k, v in record.items()
                     if k != "step" and not isinstance(v, list)})
  for record in _jsonl(tmp_path / "evals.jsonl"):
    step = record["step"]
    for size, m in record["sizes"].items():
      expected.update({(f"eval/{k}/size_{size}", step): m[k] for k in evaluate.METRICS})
    for rng, means in evaluate.range_means(record).items():
      expected.update({(f"eval/{k}/{rng}", step): v for k, v in means.items()})
    for k in ("spearman_needed", "spearman_main"):
      expected[(f"eval/alignment/{k}", step)] = record["alignment"][k]
  assert {step for _, step in expected} == {2, 4, 6}
  assert sorted(shown) == sorted(expected)
  np.testing.assert_allclose([shown[k] for k in expected], list(expected.values()), rtol=1e-6)


def test_tensorboard_without_tensorboardx_is_refused_before_anything_is_written(tmp_path,
                                                                                monkeypatch):
  monkeypatch.setitem(sys.modules, "tensorboardX", None)   # as if not installed
  with pytest.raises(config_lib.ConfigError) as e:
    train.train_and_evaluate(tiny_config("anira_o", train__tensorboard=True), str(tmp_path / "run"))
  assert str(e.value) == ("train.tensorboard needs tensorboardX, which is not installed: "
                          'pip install -e ".[tensorboard]"')
  assert not (tmp_path / "run").exists()


def test_training_curves_are_written_as_png(tmp_path, trained_run):
  workdir = tmp_path / "run"
  workdir.mkdir()
  for name in ("metrics.jsonl", "evals.jsonl"):
    shutil.copy(trained_run("anira_o") / name, workdir / name)
  path = plots.write_curves(str(workdir))
  assert path == str(workdir / "curves.png")
  assert (workdir / "curves.png").read_bytes().startswith(b"\x89PNG")
  metrics = [json.loads(l) for l in (workdir / "metrics.jsonl").read_text().splitlines()]
  evals = [json.loads(l) for l in (workdir / "evals.jsonl").read_text().splitlines()]
  fig = plots.training_curves("run", metrics, evals)
  assert [ax.get_ylabel() for ax in fig.axes] == [
      "training loss", "accuracy", "depth (iterations)", "mean halting probability λ"]
  labels = lambda ax: [t.get_text() for t in ax.get_legend().get_texts()]
  assert labels(fig.axes[1]) == ["token accuracy (training batch)",
                                 "sequence accuracy in distribution (evaluation)",
                                 "sequence accuracy out of distribution (evaluation)"]
  assert labels(fig.axes[3]) == [f"iteration {t}" for t in range(1, 5)]   # k_max 4
  with pytest.raises(UserError, match="has no logged training step"):
    plots.write_curves(str(tmp_path))
