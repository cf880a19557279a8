"""experiments/runner.py: configs of (task, variant, seed, overrides); a run is trained only when unfinished."""
import json
import shutil

import pytest

from anira_jax import runs, train
from anira_jax.experiments import ablation, reproduce, runner
from anira_jax.errors import Stopped, UserError


def test_config_for_applies_seed_and_typed_overrides():
  cfg = runner.config_for("graph", "anira_e", 2, ["train.steps=7", "task.eval_sizes=(3,8)",
                                                 "halting.penalty='kl_uniform'"])
  assert (cfg.seed, cfg.model.variant, cfg.task.name) == (2, "anira_e", "graph")
  assert cfg.train.steps == 7 and tuple(cfg.task.eval_sizes) == (3, 8)
  assert cfg.halting.penalty == "kl_uniform"
  assert cfg.model.max_len == 112   # the rest is configs/graph.py
  with pytest.raises(UserError, match="unknown config key 'train.nope'"):
    runner.config_for("graph", "anira_e", 0, ["train.nope=1"])


def test_config_for_reads_the_repository_configs_from_any_directory(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  assert runner.config_for("dyck", "fixed", 1).task.name == "dyck"
  assert reproduce.config("ci", "graph", "anira_o", 0).train.steps == 30


def test_remedies_reach_the_config_with_their_types():
  for remedy, options in ablation.remedies().items():
    cfg = runner.config_for("sorting", "anira_o", 0, ablation.remedy_overrides(remedy))
    assert {k: cfg.halting[k] for k in options} == options, remedy


def test_finished_eval_needs_the_final_step(tmp_path, trained_run):
  workdir = tmp_path / "run"
  shutil.copytree(trained_run("anira_o"), workdir)
  assert runner.finished_eval(str(workdir), 30)["step"] == 30
  assert runner.finished_eval(str(workdir), 60) is None           # an intermediate evaluation
  (workdir / "tokens.npz").unlink()
  assert runner.finished_eval(str(workdir), 30) is None
  assert runner.finished_eval(str(tmp_path / "missing"), 30) is None


def test_train_unless_done_skips_a_finished_run(tmp_path, trained_run):
  workdir = tmp_path / "run"
  shutil.copytree(trained_run("anira_o"), workdir)
  cfg = runs.load_config(str(workdir))
  saved = json.loads((workdir / "config.json").read_text())
  del saved["model"]["remat"]          # a run saved before the option existed: same config
  (workdir / "config.json").write_text(json.dumps(saved))
  before = {p: p.stat().st_mtime_ns for p in workdir.rglob("*")}
  assert runner.train_unless_done(cfg, str(workdir)) == json.loads(
      (workdir / "eval.json").read_text())
  assert {p: p.stat().st_mtime_ns for p in workdir.rglob("*")} == before


def test_train_unless_done_reports_a_stopped_run_for_a_requeue(tmp_path, monkeypatch):
  monkeypatch.setattr(train, "train_and_evaluate", lambda cfg, workdir: {})   # as after SIGTERM
  with pytest.raises(Stopped, match="was stopped; rerun the same command to resume"):
    runner.train_unless_done(runner.config_for("sorting", "anira_o", 0), str(tmp_path / "run"))


def test_train_unless_done_refuses_another_config(tmp_path, trained_run):
  workdir = tmp_path / "run"
  shutil.copytree(trained_run("anira_o"), workdir)
  cfg = runs.load_config(str(workdir))
  cfg.seed = 5
  with pytest.raises(UserError, match="holds a run of another config"):
    runner.train_unless_done(cfg, str(workdir))
