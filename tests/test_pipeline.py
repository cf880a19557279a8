"""pipeline.py: batches made ahead by worker processes are exactly those of the loop, for any
number of workers and from any resumed step; the workers end on close, errors, stop signals sent
to them, the end of training and the death of their parent."""
import os
import pathlib
import signal
import subprocess
import sys
import time

import chex
import jax
import jax.numpy as jnp
import pytest

from anira_jax import checkpoint, config as config_lib, data, losses, optimizer, pipeline, train
from anira_jax.errors import UserError
from conftest import REPO, child_env, tiny_config


def _workers() -> list[int]:
  """Pids of this process's data workers (running or not yet reaped)."""
  found = []
  for proc in pathlib.Path("/proc").iterdir():
    try:
      stat = (proc / "stat").read_text()
      cmdline = (proc / "cmdline").read_bytes()
    except (OSError, ValueError):
      continue
    if proc.name.isdigit() and int(stat.rsplit(") ", 1)[1].split()[1]) == os.getpid() and (
        b"anira_jax.pipeline" in cmdline or " Z " in stat):
      found.append(int(proc.name))
  return found


def _stream(cfg, start, count, rows=slice(None), workers=0, prefetch=2):
  task = config_lib.validate(cfg)
  with pipeline.Batches(cfg, task, start, rows, workers, prefetch) as batches:
    return [next(batches) for _ in range(count)]


def _assert_same(a, b):
  assert len(a) == len(b)
  for x, y in zip(a, b):
    assert x.keys() == y.keys() == set(data.TRAIN_KEYS)
    for k in x:
      assert x[k].dtype == y[k].dtype and x[k].shape == y[k].shape
      assert (x[k] == y[k]).all(), k


def test_batches_are_the_same_for_0_1_2_workers_and_from_a_resumed_step():
  cfg = tiny_config("anira_o", train__batch_size=8)
  task = config_lib.validate(cfg)
  rows = slice(2, 6)   # one process's rows of the global batch
  inline = [{k: v[rows] for k, v in data.train_batch(cfg, task, s).items()} for s in range(7)]
  _assert_same(_stream(cfg, 0, 7, rows), inline)
  _assert_same(_stream(cfg, 0, 7, rows, workers=1, prefetch=1), inline)
  _assert_same(_stream(cfg, 0, 7, rows, workers=2, prefetch=3), inline)
  _assert_same(_stream(cfg, 4, 3, rows, workers=2), inline[4:])   # resumed at step 4
  assert not (inline[0]["inputs"] == inline[1]["inputs"]).all()


def test_an_error_in_a_worker_is_raised_in_the_loop_and_the_workers_end():
  cfg = tiny_config("anira_o")
  cfg.task.train_sizes = (0, 0)   # unvalidated: the generator refuses size 0
  task = config_lib.validate(tiny_config("anira_o"))
  batches = pipeline.Batches(cfg, task, 0, slice(None), workers=2)
  with pytest.raises(ValueError, match="needs integer sizes >= 1") as e:
    with batches:
      next(batches)
  assert any("data worker 0, making the batch of step 0" in n for n in e.value.__notes__)
  assert all(p.poll() is not None for p in batches.processes)
  with pytest.raises(ValueError, match="closed"):
    next(batches)


def test_workers_ignore_stop_signals_until_closed():
  """A SIGTERM or Ctrl-C sent to the whole process group is the loop's to handle (it saves
  first): the workers keep serving until the loop closes them."""
  cfg = tiny_config("anira_o")
  task = config_lib.validate(cfg)
  with pipeline.Batches(cfg, task, 0, slice(None), workers=2) as batches:
    for proc in batches.processes:   # at once: before the workers have even started Python
      os.kill(proc.pid, signal.SIGTERM)
      os.kill(proc.pid, signal.SIGINT)
    next(batches)
    assert sorted(_workers()) == sorted(p.pid for p in batches.processes)
    for proc in batches.processes:
      os.kill(proc.pid, signal.SIGTERM)
      os.kill(proc.pid, signal.SIGINT)
    time.sleep(0.2)
    assert all(p.poll() is None for p in batches.processes)
    _assert_same([next(batches) for _ in range(3)], _stream(cfg, 1, 3))
  assert all(p.poll() is not None for p in batches.processes)


_ORPHAN = """
import os, sys
from anira_jax import config as config_lib, pipeline
sys.path.insert(0, "tests")
from conftest import tiny_config
cfg = tiny_config("anira_o")
batches = pipeline.Batches(cfg, config_lib.validate(cfg), 0, slice(None), workers=2)
next(batches)
print(" ".join(str(p.pid) for p in batches.processes), flush=True)
if sys.argv[1] == "die":
  os._exit(0)      # no clean-up at all, as a second Ctrl-C or a crash
"""  # "exit": a normal exit without closing them


@pytest.mark.parametrize("how", ["die", "exit"])
def test_workers_end_with_their_parent(how):
  proc = subprocess.run([sys.executable, "-c", _ORPHAN, how], cwd=REPO, env=child_env(),
                        capture_output=True, text=True, timeout=120, check=False)
  assert proc.returncode == 0, proc.stderr
  pids = [int(p) for p in proc.stdout.split()]
  assert len(pids) == 2

  def alive(pid):
    try:
      with open(f"/proc/{pid}/stat") as f:
        return f.read().split(") ")[1][0] != "Z"
    except FileNotFoundError:
      return False
  deadline = time.time() + 10
  while any(alive(p) for p in pids) and time.time() < deadline:
    time.sleep(0.05)
  assert not any(alive(p) for p in pids)


def _final_state(workdir, cfg):
  like = jax.eval_shape(lambda: optimizer.init_state(cfg, config_lib.validate(cfg)))
  return checkpoint.restore(checkpoint.manager(str(workdir), create=False), like)


def test_training_with_workers_stopped_and_resumed_equals_one_run_in_the_loop(
    tmp_path, monkeypatch, trained_run):
  """30 steps with 2 workers stopped by SIGTERM after step 12, resumed with 1 worker, end
  bitwise where 30 steps with batches made in the loop do; no worker outlives either call."""
  reference = trained_run("anira_o")   # tiny_config("anira_o"): 30 steps, data_workers 0
  real_next = pipeline.Batches.__next__

  def next_batch(self):
    if self._next == 11:   # delivered while step 12 is made; the loop stops after it
      os.kill(os.getpid(), signal.SIGTERM)
    return real_next(self)

  monkeypatch.setattr(pipeline.Batches, "__next__", next_batch)
  cfg = tiny_config("anira_o", train__data_workers=2)
  assert train.train_and_evaluate(cfg, str(tmp_path)) == {}
  assert int(_final_state(tmp_path, cfg)["step"]) == 12
  assert _workers() == []
  monkeypatch.setattr(pipeline.Batches, "__next__", real_next)
  result = train.train_and_evaluate(tiny_config("anira_o", train__data_workers=1), str(tmp_path))
  assert result["sizes"]
  assert _workers() == []
  chex.assert_trees_all_equal(_final_state(tmp_path, cfg), _final_state(reference, cfg))


def test_non_finite_gradients_between_logs_stop_at_the_step_and_keep_a_finite_checkpoint(
    tmp_path, monkeypatch):
  """Inf gradients (finite loss) at step 13, which is neither a log nor a checkpoint step: the
  parameters become NaN, so the loss of step 14 is NaN. The loop fetches nothing from the devices
  between log steps, yet the stop names step 14, the checkpoint of step 10 stays the last, its
  parameters are finite, and the data workers end."""
  real = losses.objective

  def objective(cfg, params, batch, step, axis_name=None):
    loss, aux = real(cfg, params, batch, step, axis_name)
    w = params["embed"]["embedding"]
    # sqrt(u) at u = 0: value 0, gradient inf, at step 13 (index 12) only (u elsewhere 1: no
    # 0 * inf from the branch not taken)
    u = jnp.where(step == 12, (w - jax.lax.stop_gradient(w)).sum(), 1.0)
    poison = jnp.where(step == 12, jnp.sqrt(u), 0.0)
    return loss + poison, aux

  monkeypatch.setattr(losses, "objective", objective)
  cfg = tiny_config("anira_o", train__steps=30, train__checkpoint_every=10, train__log_every=10,
                    train__data_workers=2)
  with pytest.raises(UserError) as e:
    train.train_and_evaluate(cfg, str(tmp_path))
  assert str(e.value) == (
      "loss became nan at step 14; training stopped, the last good checkpoint (step 10) is kept; "
      "lower train.learning_rate or halting.penalty_weight")
  assert _workers() == []
  state = _final_state(tmp_path, cfg)
  assert int(state["step"]) == 10
  assert all(jnp.isfinite(x).all() for x in jax.tree.leaves(state))
  assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir() if p.name.isdigit()) == ["10"]
