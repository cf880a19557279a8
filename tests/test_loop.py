"""The training loop's tools: the loop's own config fields, a profiler window, and the training
curves of a run."""
import gzip
import json
import shutil

import pytest

from anira_jax import config as config_lib, plots, train
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
