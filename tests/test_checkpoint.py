"""Resuming: an interrupted or extended run ends bitwise where an uninterrupted one does; SIGTERM
or Ctrl-C saves and exits for a requeue, a second Ctrl-C at once; a corrupt checkpoint is reported
in one line."""
import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys

import chex
import jax
import numpy as np
import pytest

from anira_jax import checkpoint, cli, config as config_lib, data, errors, optimizer, train
from conftest import (REPO, TINY, child_env, last_metrics, read_eval, run_module, stderr_lines,
                      tiny_config, tiny_flags)

pytestmark = pytest.mark.xdist_group("test_checkpoint")   # one worker: module fixture runs once


def _final_state(workdir, cfg):
  like = jax.eval_shape(lambda: optimizer.init_state(cfg, config_lib.validate(cfg)))
  return checkpoint.restore(checkpoint.manager(str(workdir), create=False), like)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
  """40 steps in one go, logging every 10 and checkpointing every 10."""
  workdir = tmp_path_factory.mktemp("uninterrupted")
  cfg = tiny_config("anira_o", train__steps=40, train__checkpoint_every=10)
  train.train_and_evaluate(cfg, str(workdir))
  return workdir, cfg


def _assert_same_run(workdir, reference, cfg):
  a, b = _final_state(workdir, cfg), _final_state(reference, cfg)
  assert int(a["step"]) == int(b["step"]) == 40
  chex.assert_trees_all_equal(a["params"], b["params"])
  chex.assert_trees_all_equal(a["opt_state"], b["opt_state"])
  assert read_eval(workdir) == read_eval(reference)
  assert last_metrics(workdir)["step"] == 40
  assert last_metrics(workdir)["loss"] == last_metrics(reference)["loss"]
  lines = pathlib.Path(workdir, "metrics.jsonl").read_text().splitlines()
  assert [json.loads(l)["step"] for l in lines] == [10, 20, 30, 40]


def test_extend_20_then_40_equals_40(tmp_path, uninterrupted):
  """train.steps=20, then the same workdir with train.steps=40.

  This is bitwise only because tiny configs use warmup_steps 50: the LR schedule's horizon is
  max(train.steps, warmup_steps + 1), so raising train.steps inside the warm-up leaves it
  unchanged. (With a horizon of train.steps, extending a run changes the schedule of the steps
  already taken, and no resume could match.)"""
  reference, cfg40 = uninterrupted
  train.train_and_evaluate(tiny_config("anira_o", train__steps=20, train__checkpoint_every=10),
                           str(tmp_path))
  assert _final_state(tmp_path, cfg40)["step"] == 20
  assert read_eval(tmp_path)["step"] == 20
  train.train_and_evaluate(cfg40, str(tmp_path))
  _assert_same_run(tmp_path, reference, cfg40)


def test_signal_at_step_20_then_rerun_equals_40(tmp_path, monkeypatch, uninterrupted, capsys):
  """The same train.steps=40 command, stopped by SIGTERM after step 20, then rerun."""
  reference, cfg40 = uninterrupted
  real_train_batch = data.train_batch

  def train_batch(cfg, task, step, rows=slice(None)):
    if step == 19:   # delivered while step 20 runs; the loop stops after it
      os.kill(os.getpid(), signal.SIGTERM)
    return real_train_batch(cfg, task, step, rows)

  monkeypatch.setattr(data, "train_batch", train_batch)
  handler = signal.getsignal(signal.SIGTERM)
  assert train.train_and_evaluate(cfg40, str(tmp_path)) == {}
  assert "stopped by signal 15 at step 20" in capsys.readouterr().out
  assert signal.getsignal(signal.SIGTERM) == handler   # the previous handler is back
  assert _final_state(tmp_path, cfg40)["step"] == 20
  monkeypatch.setattr(data, "train_batch", real_train_batch)
  train.train_and_evaluate(cfg40, str(tmp_path))
  assert "resuming from step 20" in capsys.readouterr().out
  _assert_same_run(tmp_path, reference, cfg40)


def test_signal_saves_checkpoint_and_exits_for_requeue(tmp_path, signum=signal.SIGTERM):
  """SIGTERM: one checkpoint, one line, exit 75 (requeue), no traceback; the same command then
  resumes. Ctrl-C takes the same handler (tests/test_launch.py sends it to process 0)."""
  workdir = tmp_path / "run"
  # Trains until stopped, on the schedule of a tiny run: the step the session has compiled.
  args = [sys.executable, "-m", "anira_jax.main", "--config=configs/sorting.py",
          f"--workdir={workdir}", *tiny_flags(train__steps=100000, train__log_every=5,
                                              train__schedule_steps=TINY["train.steps"])]
  proc = subprocess.Popen(args, cwd=REPO, env=child_env(), stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True)
  try:
    first = proc.stdout.readline()
    assert first.startswith("step "), first + proc.stderr.read()
    proc.send_signal(signum)
    out, err = proc.communicate(timeout=120)
  finally:
    if proc.poll() is None:
      proc.kill()
      proc.wait()
  assert proc.returncode == cli.EXIT_REQUEUE == 75, err
  assert "Traceback" not in err and "KeyboardInterrupt" not in err, err
  stopped = [l for l in out.splitlines() if l.startswith("stopped by signal")]
  assert len(stopped) == 1 and f"signal {int(signum)} " in stopped[0], out
  step = int(stopped[0].split(" at step ")[1].split(";")[0])
  assert step >= 5
  saved = sorted(int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit())
  assert saved[-1] == step

  # The same command resumes (here up to a few steps more, to stay short).
  rerun = run_module("anira_jax.main", "--config=configs/sorting.py", f"--workdir={workdir}",
                     *tiny_flags(train__steps=step + 3, train__log_every=5))
  assert rerun.returncode == 0, rerun.stderr
  assert f"resuming from step {step}" in rerun.stdout
  assert rerun.stdout.splitlines()[-1] == str(workdir)
  assert read_eval(workdir)["step"] == step + 3


def test_first_signal_stops_once_and_a_second_ctrl_c_exits_at_once(monkeypatch, capsys):
  exits = []
  monkeypatch.setattr(os, "_exit", exits.append)
  stop = {"signal": None}
  handle = train.stop_handler(stop)
  handle(signal.SIGINT, None)
  handle(signal.SIGTERM, None)        # a later SIGTERM changes nothing
  assert stop == {"signal": signal.SIGINT} and exits == []
  handle(signal.SIGINT, None)
  assert exits == [cli.EXIT_INTERRUPTED]
  assert capsys.readouterr().err == "second interrupt: exiting now, without saving\n"


def test_one_process_stops_for_its_own_signal():
  assert train.agreed_stop(None) == 0
  assert train.agreed_stop(signal.SIGTERM) == signal.SIGTERM


def _snapshot(root: pathlib.Path) -> dict:
  return {p: p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_resume_refuses_a_changed_model_or_seed_naming_each_field(tmp_path, trained_run):
  workdir = tmp_path / "run"
  shutil.copytree(trained_run("anira_o"), workdir)
  before = _snapshot(workdir)
  cfg = tiny_config("anira_o", model__k_max=3, seed=1, train__steps=40)
  with pytest.raises(errors.UserError) as e:
    train.train_and_evaluate(cfg, str(workdir))
  assert str(e.value) == (
      f"cannot resume {workdir}: its run was trained with another config (model.k_max 4 -> 3, "
      "seed 0 -> 1); train this config in a new --workdir, or resume with the saved values")
  assert _snapshot(workdir) == before


def test_resume_accepts_new_steps_cadence_evaluation_and_tensorboard(tmp_path, trained_run):
  workdir = tmp_path / "run"
  shutil.copytree(trained_run("anira_o"), workdir)
  cfg = tiny_config("anira_o", train__steps=32, train__log_every=2, train__checkpoint_every=2,
                    train__tensorboard=True, eval__examples=8, task__eval_sizes=(2, 4, 8),
                    parallel__mode="pmap")
  result = train.train_and_evaluate(cfg, str(workdir))
  assert set(result["sizes"]) == {"2", "4", "8"} and read_eval(workdir)["step"] == 32
  assert len(list((workdir / "tensorboard").glob("events.out.tfevents.*"))) == 1
  saved = json.loads((workdir / "config.json").read_text())
  assert (saved["train"]["steps"], saved["train"]["schedule_steps"]) == (32, 30)


def test_extending_a_run_keeps_its_schedule(tmp_path):
  """Past the warm-up the schedule matters: `first` steps then 9 more equals as many steps with
  train.schedule_steps=`first`, and differs from a fresh run of as many steps. `first` ends one
  step past the tiny warm-up: its schedule is the tiny runs', whose step the session has
  compiled, so only the fresh run's schedule compiles one of its own."""
  extended, fixed, fresh = (tmp_path / name for name in ("extended", "fixed", "fresh"))
  first, every = TINY["train.warmup_steps"] + 1, dict(train__checkpoint_every=10)
  train.train_and_evaluate(tiny_config("anira_o", train__steps=first, **every), str(extended))
  cfg = tiny_config("anira_o", train__steps=first + 9, **every)
  train.train_and_evaluate(cfg, str(extended))
  train.train_and_evaluate(tiny_config("anira_o", train__steps=first + 9,
                                       train__schedule_steps=first, **every), str(fixed))
  train.train_and_evaluate(cfg, str(fresh))
  chex.assert_trees_all_equal(_final_state(extended, cfg), _final_state(fixed, cfg))
  assert not np.array_equal(_final_state(extended, cfg)["params"]["embed"]["embedding"],
                            _final_state(fresh, cfg)["params"]["embed"]["embedding"])


def test_restore_with_other_shapes_names_them_and_keeps_the_checkpoint(trained_run):
  workdir = trained_run("anira_o")
  cfg = tiny_config("anira_o", model__d_model=32)
  like = jax.eval_shape(lambda: optimizer.init_state(cfg, config_lib.validate(cfg)))
  with pytest.raises(errors.UserError) as e:
    checkpoint.restore(checkpoint.manager(str(workdir), create=False), like)
  message = str(e.value)
  assert f"checkpoint {workdir}/checkpoints/30 holds a train state of other shapes (" in message
  assert "saved (" in message and ", this config (" in message and "new --workdir" in message
  assert "delete" not in message


def _corrupt(files, how):
  for path in files:
    if how == "truncate":
      path.write_bytes(b"")
    else:
      size = max(path.stat().st_size, 16)
      path.write_bytes(np.random.default_rng(0).bytes(size))


@pytest.mark.parametrize("how", ["truncate", "garble"])
def test_corrupt_checkpoint_fails_in_one_line(tmp_path, trained_run, how):
  workdir = tmp_path / "run"
  shutil.copytree(trained_run("anira_o"), workdir)
  step_dir = workdir / "checkpoints" / "30"
  files = [p for p in step_dir.rglob("*") if p.is_file()]
  assert files
  _corrupt(files, how)
  eval_before = (workdir / "eval.json").read_bytes()
  proc = run_module("anira_jax.evaluate", f"--workdir={workdir}")
  assert proc.returncode != 0
  lines = stderr_lines(proc)
  assert 1 <= len(lines) <= 3, proc.stderr
  assert "Traceback" not in proc.stderr
  assert "checkpoint" in proc.stderr and str(step_dir) in proc.stderr, proc.stderr
  assert (workdir / "eval.json").read_bytes() == eval_before
