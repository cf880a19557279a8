"""train.py: a tiny model really learns; logged metrics; collapse warning; NaN stop."""
import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from anira_jax import losses, runs, train
from anira_jax.errors import UserError
from conftest import read_eval, tiny_config


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_tiny_sorting_model_learns(tmp_path, dtype):
  """Sorting 2..4 values from 8 in 300 steps, with the sorting config's halting defaults (deep
  start). Chance token accuracy is about 1/8; this setting reaches 0.96-1.0 on every
  in-distribution size for seeds 0-3, so 0.9 leaves a margin; with bfloat16 matmuls
  (model.dtype; float32 parameters, state, halting and loss) 0.94-1.0 for seeds 0-2."""
  cfg = tiny_config("anira_o", task__options__num_values=8, task__eval_sizes=(2, 3, 4, 6),
                    model__d_model=32, model__num_heads=4, model__mlp_ratio=4, model__k_max=3,
                    model__dtype=dtype, halting__bias_init=-3.0, halting__threshold=0.01,
                    train__steps=300, train__batch_size=32, train__warmup_steps=20,
                    train__log_every=50, eval__examples=64)
  result = train.train_and_evaluate(cfg, str(tmp_path))
  assert result == {k: v for k, v in read_eval(tmp_path).items() if k != "step"}
  for size, m in result["sizes"].items():
    if m["in_distribution"]:
      assert m["token_accuracy"] >= 0.9, (size, m)
  assert np.mean([m["sequence_accuracy"] for m in result["sizes"].values()
                  if m["in_distribution"]]) >= 0.8
  assert result["sizes"]["2"]["sequence_accuracy"] >= 0.9

  records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
  assert [r["step"] for r in records] == [50, 100, 150, 200, 250, 300]
  for r in records:
    assert {"step", "loss", "ce", "penalty", "token_accuracy", "mean_depth", "depth_std",
            "depth_fraction", "halt_prob"} <= set(r)
    assert math.isfinite(r["loss"])
    assert 1.0 <= r["mean_depth"] <= 3.0
    assert len(r["depth_fraction"]) == 3 and sum(r["depth_fraction"]) == pytest.approx(1, abs=1e-5)
    assert len(r["halt_prob"]) == 3 and r["halt_prob"][0] is not None
    assert r["halt_prob"][-1] in (None, 1.0)   # forced halt at the last iteration
  assert records[-1]["loss"] < records[0]["loss"]
  assert records[-1]["token_accuracy"] > 0.8


def test_evaluation_during_depth_warmup_runs_the_model_training_runs(tmp_path):
  """Before halting.depth_warmup ends every token runs k_max iterations in training; evaluation
  and loaded runs see the same model (tiny_config's halting bias +1 alone would halt early)."""
  cfg = tiny_config("anira_o", halting__depth_warmup=1000)
  result = train.train_and_evaluate(cfg, str(tmp_path))
  k_max = cfg.model.k_max
  assert all(m["mean_depth"] == k_max for m in result["sizes"].values()), result
  records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
  assert all(r["mean_depth"] == k_max for r in records)
  run = runs.load_run(str(tmp_path))
  inputs = run.task.sample(0, 3, 4)["inputs"]
  np.testing.assert_array_equal(run.predict(inputs)["depth"][inputs != 0], k_max)
  raw = dict(run.params, halt=jax.tree.map(np.asarray, run.params["halt"]))
  raw["halt"] = {"kernel": np.zeros_like(raw["halt"]["kernel"]), "bias": np.ones_like(
      raw["halt"]["bias"])}
  assert (runs.Run(run.config, run.task, raw, run.step).predict(inputs)["depth"][inputs != 0]
          < k_max).any()   # the halting unit on its own would halt tokens early


def _metrics(std, fractions, mean=2.0):
  return {"depth_std": std, "depth_fraction": fractions, "mean_depth": mean}


def test_collapse_monitor_fires_once_on_collapsed_sequence():
  monitor = train.CollapseMonitor()
  collapsed = _metrics(0.05, [0.0, 0.02, 0.98], mean=2.98)
  assert monitor(100, collapsed) is None
  assert monitor(200, collapsed) is None
  warning = monitor(300, collapsed)
  assert warning is not None
  assert "step 300" in warning and "2.98" in warning and "0.050" in warning
  assert warning.count("\n") == 0
  for step in (400, 500, 600):   # only once
    assert monitor(step, collapsed) is None


def test_collapse_monitor_silent_on_healthy_and_interrupted_sequences():
  healthy = _metrics(0.8, [0.3, 0.4, 0.3])
  monitor = train.CollapseMonitor()
  for step in range(100, 1100, 100):
    assert monitor(step, healthy) is None
  collapsed = _metrics(0.0, [0.0, 0.0, 1.0], mean=3.0)
  monitor = train.CollapseMonitor()
  for m in (collapsed, collapsed, healthy, collapsed, collapsed, healthy):   # never 3 in a row
    assert monitor(0, m) is None


def test_training_prints_collapse_warning_for_fixed_depth_anira(tmp_path, capsys):
  """Halting bias -30: every token runs all k_max iterations (depth std 0) from the start."""
  cfg = tiny_config("anira_o", halting__bias_init=-30.0, train__steps=30, train__log_every=5)
  train.train_and_evaluate(cfg, str(tmp_path))
  out = capsys.readouterr().out
  warnings = [l for l in out.splitlines() if l.startswith("warning: depth collapsed")]
  assert warnings == [warnings[0]] and "at step 15" in warnings[0], out


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path, monkeypatch):
  real = losses.objective

  def objective(cfg, params, batch, step, axis_name=None):
    loss, aux = real(cfg, params, batch, step, axis_name)
    bad = step >= 12   # the loss of step 13 (1-based) is NaN
    aux["mean"]["loss"] = jnp.where(bad, jnp.nan, aux["mean"]["loss"])
    return jnp.where(bad, jnp.nan, loss), aux

  monkeypatch.setattr(losses, "objective", objective)
  cfg = tiny_config("anira_o", train__steps=30, train__checkpoint_every=5)
  with pytest.raises(UserError) as e:
    train.train_and_evaluate(cfg, str(tmp_path))
  message = str(e.value)
  assert message.startswith("loss became nan at step 13")
  assert "last good checkpoint (step 10) is kept" in message
  assert "learning_rate" in message
  run = runs.load_run(str(tmp_path))
  assert run.step == 10
  assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(run.params))
  assert not (tmp_path / "checkpoints" / "13").exists()


def test_non_finite_update_after_a_finite_loss_is_never_saved(tmp_path, monkeypatch):
  """The step to 15 has a finite loss but NaN gradients (0 * sqrt'(0)), so the parameters it
  would checkpoint are NaN: step 10 stays the last checkpoint."""
  real = losses.objective

  def objective(cfg, params, batch, step, axis_name=None):
    loss, aux = real(cfg, params, batch, step, axis_name)
    scale = jnp.where(step == 14, 0.0, 1.0)   # value 0 either way, gradient NaN at step 14
    poison = jnp.sqrt(scale * jnp.sum(params["embed"]["embedding"] ** 2)) * (1.0 - scale)
    return loss + poison, aux

  monkeypatch.setattr(losses, "objective", objective)
  cfg = tiny_config("anira_o", train__steps=30, train__checkpoint_every=5)
  with pytest.raises(UserError) as e:
    train.train_and_evaluate(cfg, str(tmp_path))
  assert str(e.value) == (
      "the parameters or optimizer state became non-finite at step 15; training stopped, the "
      "last good checkpoint (step 10) is kept; lower train.learning_rate or "
      "halting.penalty_weight")
  run = runs.load_run(str(tmp_path))
  assert run.step == 10
  assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(run.params))
  assert not (tmp_path / "checkpoints" / "15").exists()
