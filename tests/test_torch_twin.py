"""The PyTorch twin of benchmarks/torch_twin.py computes what anira_jax computes (needs torch)."""
import jax
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from anira_jax import config as config_lib, data, halting, optimizer, runs, train  # noqa: E402
from anira_jax.parallel import DataParallel  # noqa: E402
from benchmarks import torch_twin  # noqa: E402


def tiny_config(variant: str = "anira_o", output: str = "state", penalty: str = "ponder"):
  c = config_lib.default("sorting", variant)
  c.task.options.num_values = 6
  c.task.train_sizes = (2, 3)
  c.task.eval_sizes = (2, 4)
  c.model.d_model = 16
  c.model.num_heads = 2
  c.model.k_max = 3
  c.model.max_len = 16
  c.halting.output = output
  c.halting.penalty = penalty
  c.halting.threshold = 0.1
  c.halting.bias_init = 1.0        # depths 1, 2 and 3 all occur at init
  c.train.batch_size = 8
  c.train.warmup_steps = 1         # step 0 has lr 0 (moments only), step 1 the peak rate
  return c


def setup(cfg):
  task = config_lib.validate(cfg)
  state = optimizer.init_state(cfg, task)
  return task, state, jax.tree.map(np.asarray, state["params"])


@pytest.mark.parametrize("variant,output", [("anira_o", "state"), ("anira_o", "distribution"),
                                            ("anira_e", "state"), ("transformer", "state")])
def test_forward_matches(variant, output):
  cfg = tiny_config(variant, output)
  task, _, params = setup(cfg)
  inputs = data.train_batch(cfg, task, 0)["inputs"]
  for mode in ("scan", "while") if (variant, output) == ("anira_o", "state") else ("while",):
    r = torch_twin.check_parity(cfg, params, inputs, runs.predictor(cfg, mode))
    assert r["max_logit_diff"] <= 1e-4, r
    assert r["depths_equal"], r
    assert r["params_equal"] and r["jax_params"] == r["torch_params"], r
    assert r["faithful"]
    if mode == "while":
      assert r["iterations"] == r["jax_iterations"]
  if variant == "anira_o":
    # The check is not vacuous: depths vary and padding has depth 0 ...
    predict = runs.predictor(cfg, "while")
    depth = np.asarray(predict(params, inputs)["depth"])
    assert set(np.unique(depth[inputs != 0])) == {1, 2, 3} and np.all(depth[inputs == 0] == 0)
    # ... and with every token halting at once, both loops stop after one iteration.
    early = {**params, "halt": {**params["halt"], "bias": params["halt"]["bias"] + 10.0}}
    r = torch_twin.check_parity(cfg, early, inputs, predict)
    assert r["faithful"] and r["iterations"] == r["jax_iterations"] == 1, r


def test_twin_implements_registered_penalties_only():
  assert set(torch_twin.PENALTIES) <= set(halting.PENALTIES)
  assert torch_twin.SUPPORTED["halting.penalty"] == tuple(torch_twin.PENALTIES)


def test_twin_refuses_a_registered_penalty_it_does_not_implement(depth_squared_penalty):
  cfg = tiny_config(penalty=depth_squared_penalty)
  config_lib.validate(cfg)                      # a valid anira_jax config
  assert torch_twin.check_supported(cfg) == ["halting.penalty='depth_squared'"]
  refusal = r"^the PyTorch twin does not implement halting.penalty='depth_squared'$"
  with pytest.raises(NotImplementedError, match=refusal):
    torch_twin.AniraTwin(cfg, vocab_size=8)


def test_params_round_trip():
  cfg = tiny_config("transformer")
  _, _, params = setup(cfg)
  back = torch_twin.to_jax_params(torch_twin.from_jax(cfg, params))
  jax.tree.map(np.testing.assert_array_equal, back, params)


@pytest.mark.parametrize("penalty", ["ponder", "kl_geometric"])
def test_train_steps_match(penalty):
  cfg = tiny_config(penalty=penalty)
  task, state, params = setup(cfg)
  opt = optimizer.make(cfg)
  parallel = DataParallel("shard_map", lambda st, b: train.train_step(cfg, opt, st, b),
                          jax.devices()[:1])
  state = parallel.put_state(state)
  twin = torch_twin.from_jax(cfg, params)
  trainer = torch_twin.Trainer(cfg, twin)
  for step in range(2):
    batch = data.train_batch(cfg, task, step)
    state, out = parallel(state, parallel.put_batch(batch))
    metrics = trainer.train_step(torch_twin.to_torch_batch(batch))
    assert abs(float(metrics["loss"]) - float(out["mean"]["loss"])) <= 1e-5
    assert abs(float(metrics["penalty"]) - float(out["mean"]["penalty"])) <= 1e-5
  jax_params = parallel.get_state(state)["params"]
  moved = jax.tree.map(lambda a, b: np.max(np.abs(a - b)), jax_params, params)
  assert max(jax.tree.leaves(moved)) > 1e-4   # the second step did update
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=0, atol=5e-6),
               torch_twin.to_jax_params(twin), jax_params)
