"""losses.py: what the objective averages over, and its exact reduction across devices."""
import functools
import json

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec as P

from anira_jax import halting, losses, recurrence
from anira_jax.tasks.base import PAD
from conftest import forward, random_params, tiny_batch, tiny_config

STEP = jnp.asarray(100, jnp.int32)   # past any warm-up: penalty at full weight


def _setup(variant, penalty="ponder", penalty_tokens="all", **overrides):
  cfg = tiny_config(variant, halting__penalty=penalty, halting__threshold=0.1,
                    halting__penalty_weight=0.05, halting__penalty_tokens=penalty_tokens,
                    **overrides)
  params = random_params(cfg, seed=1, halt_bias=1.0)
  return cfg, params, tiny_batch(cfg)


@functools.cache
def _objective(cfg_json):
  """One jitted objective per config (keeps the number of compilations small)."""
  cfg = ml_collections.ConfigDict(json.loads(cfg_json))
  return jax.jit(lambda params, batch, step: losses.objective(cfg, params, batch, step))


def objective(cfg, params, batch, step=STEP):
  return _objective(cfg.to_json())(params, batch, step)


def test_cross_entropy_by_hand():
  cfg, params, batch = _setup("anira_o")
  loss, aux = objective(cfg, params, batch)
  logits, final = forward(cfg, params, batch["inputs"], "scan")
  logp = np.asarray(jax.nn.log_softmax(logits))
  mask = batch["loss_mask"]
  b, l = np.nonzero(mask)
  ce = -logp[b, l, batch["targets"][b, l]].mean()
  assert float(aux["mean"]["ce"]) == pytest.approx(ce, rel=1e-5)
  pen = halting.ponder_cost(final.weights_BxLxK, final.depth_BxL)
  valid = batch["inputs"] != PAD
  assert float(aux["mean"]["penalty"]) == pytest.approx(float(pen[valid].mean()), rel=1e-5)
  assert float(loss) == pytest.approx(ce + 0.05 * float(pen[valid].mean()), rel=1e-5)
  assert float(aux["sum"]["answer_tokens"]) == mask.sum()


@pytest.mark.parametrize("variant", ["anira_o", "fixed"])
def test_targets_outside_loss_mask_do_not_matter(variant):
  cfg, params, batch = _setup(variant)
  loss, aux = objective(cfg, params, batch)
  mask = batch["loss_mask"]
  rng = np.random.default_rng(0)
  vocab = params["readout"]["out"]["kernel"].shape[-1]
  outside = dict(batch, targets=np.where(mask, batch["targets"],
                                         rng.integers(0, vocab, mask.shape)).astype(np.int32))
  assert (outside["targets"] != batch["targets"]).any()
  loss2, aux2 = objective(cfg, params, outside)
  assert float(loss2) == float(loss)
  assert float(aux2["mean"]["ce"]) == float(aux["mean"]["ce"])
  # Inside the mask they do (so the comparison above can fail).
  inside = dict(batch, targets=np.where(mask, (batch["targets"] + 1) % vocab,
                                        batch["targets"]).astype(np.int32))
  assert float(objective(cfg, params, inside)[0]) != float(loss)


@pytest.mark.parametrize("penalty", ["ponder", "kl_geometric", "kl_uniform"])
def test_penalty_averages_over_real_tokens_only(penalty):
  cfg, params, batch = _setup("anira_e", penalty=penalty)
  _, aux = objective(cfg, params, batch)
  _, final = forward(cfg, params, batch["inputs"], "scan")
  per_token = np.asarray(halting.penalty(penalty, final.weights_BxLxK, final.logits_BxLxK,
                                         final.depth_BxL, cfg.halting))
  valid = batch["inputs"] != PAD
  assert (~valid).sum() > 0
  np.testing.assert_array_equal(per_token[~valid], 0.0)   # PAD: depth 0, no weights
  got = float(aux["mean"]["penalty"])
  assert got == pytest.approx(per_token[valid].mean(), rel=1e-5)
  assert got != pytest.approx(per_token.mean(), rel=1e-3)   # not averaged over all positions
  assert got > 0


def test_penalty_on_answer_tokens_only():
  cfg, params, batch = _setup("anira_o", penalty_tokens="answer")
  _, aux = objective(cfg, params, batch)
  _, final = forward(cfg, params, batch["inputs"], "scan")
  per_token = np.asarray(halting.penalty("ponder", final.weights_BxLxK, final.logits_BxLxK,
                                         final.depth_BxL, cfg.halting))
  answer = batch["loss_mask"]
  got = float(aux["mean"]["penalty"])
  assert got == pytest.approx(per_token[answer].mean(), rel=1e-5)
  assert got != pytest.approx(per_token[batch["inputs"] != PAD].mean(), rel=1e-3)


@pytest.mark.parametrize("variant", ["fixed", "transformer"])
def test_baselines_have_zero_penalty(variant):
  cfg, params, batch = _setup(variant)
  loss, aux = objective(cfg, params, batch)
  assert float(aux["mean"]["penalty"]) == 0.0
  assert float(loss) == float(aux["mean"]["ce"])


def test_penalty_scale_enters_loss():
  cfg, params, batch = _setup("anira_o", halting__penalty_warmup=10, halting__penalty_ramp=4)
  loss0, aux0 = objective(cfg, params, batch, jnp.asarray(0))
  assert float(aux0["mean"]["penalty_scale"]) == 0.0
  assert float(loss0) == float(aux0["mean"]["ce"])
  loss1, aux1 = objective(cfg, params, batch, jnp.asarray(11))   # halfway up the ramp
  assert float(aux1["mean"]["penalty_scale"]) == pytest.approx(0.025)
  assert float(loss1) == pytest.approx(float(aux1["mean"]["ce"]) + 0.025 *
                                       float(aux1["mean"]["penalty"]), rel=1e-6)


@pytest.mark.parametrize("variant", ["anira_o", "anira_e"])
def test_depth_warmup_runs_every_token_to_k_max_and_freezes_the_halting_unit(variant):
  # halt_bias=1.0 would halt most tokens after one iteration; the warm-up overrides it.
  cfg, params, batch = _setup(variant, halting__depth_warmup=50)
  loss_and_grad = jax.jit(jax.value_and_grad(
      lambda p, step: losses.objective(cfg, p, batch, step), has_aux=True))
  for step, off in ((0, True), (49, True), (50, False)):
    (_, aux), grads = loss_and_grad(params, jnp.asarray(step, jnp.int32))
    hist = aux["sum"]["depth_hist"]
    at_k_max = float(hist[-1]) == float(jnp.sum(hist)) == float(aux["sum"]["answer_tokens"])
    assert at_k_max == off, step
    assert all(bool(jnp.all(g == 0)) for g in jax.tree.leaves(grads["halt"])) == off, step


# The halting unit as an exit classifier (halting.supervision="correctness") --------------------

# (variant, output, extra overrides): the halting unit as a classifier; `fixed`, which has none
# (deep supervision: every iteration's readout is an exit); the readout deciding instead of a unit.
CORRECTNESS = [("anira_o", "state", {}), ("anira_e", "distribution", {}), ("fixed", "state", {}),
               ("anira_o", "state", {"halting__exit_rule": "readout",
                                     "halting__exit_confidence": 0.26,
                                     "halting__exit_stability": 0.2})]


@pytest.mark.parametrize("variant,output,extra", CORRECTNESS,
                         ids=["anira_o", "anira_e", "fixed", "readout_rule"])
def test_correctness_supervision_by_hand(variant, output, extra):
  cfg, params, batch = _setup(variant, halting__supervision="correctness",
                              halting__output=output, **extra)
  loss, aux = objective(cfg, params, batch)
  logits, exits, final = recurrence.forward_exits(cfg, params, batch["inputs"])
  mask, targets = batch["loss_mask"], batch["targets"]
  b, l = np.nonzero(mask)
  k_max = cfg.model.k_max
  logp = np.asarray(jax.nn.log_softmax(exits))              # [K, B, L, V]
  ce_k = np.array([-logp[k, b, l, targets[b, l]].mean() for k in range(k_max)])
  omega = np.arange(1, k_max + 1) / np.arange(1, k_max + 1).sum()
  assert float(aux["mean"]["ce"]) == pytest.approx(float(omega @ ce_k), rel=1e-5)
  if variant == "fixed" or extra:   # no unit decides: cross-entropy alone
    assert float(aux["mean"]["penalty"]) == 0.0 and float(loss) == float(aux["mean"]["ce"])
    return
  depth, z = np.asarray(final.depth_BxL), np.asarray(final.logits_BxLxK)
  right = np.asarray(exits).argmax(-1) == targets[None]      # [K, B, L]
  terms = []
  for i, j in zip(b, l):
    for t in range(min(depth[i, j], k_max - 1)):   # the decisions the token made
      p = 1.0 / (1.0 + np.exp(-z[i, j, t]))
      terms.append(-np.log(p) if right[t, i, j] else -np.log(1.0 - p))
  assert len(terms) > len(b)   # some tokens decided more than once
  assert float(aux["mean"]["penalty"]) == pytest.approx(np.mean(terms), rel=1e-4)
  assert float(loss) == pytest.approx(float(aux["mean"]["ce"]) + np.mean(terms), rel=1e-4)


@pytest.mark.parametrize("variant", ["anira_o", "anira_e"])
def test_correctness_supervision_keeps_the_classifier_and_the_trunk_apart(variant):
  # Cross-entropy trains everything but the halting unit; the classifier's loss only the unit.
  def terms(cfg):   # gradients of [cross-entropy, penalty], one compilation
    mean = lambda p: losses.objective(cfg, p, batch, STEP)[1]["mean"]
    grads = jax.jit(jax.jacrev(lambda p: jnp.stack([mean(p)["ce"], mean(p)["penalty"]])))(params)
    return jax.tree.map(lambda g: g[0], grads), jax.tree.map(lambda g: g[1], grads)
  cfg, params, batch = _setup(variant, halting__supervision="correctness")
  ce_grads, bce_grads = terms(cfg)
  zero = lambda tree: all(bool(jnp.all(g == 0)) for g in jax.tree.leaves(tree))
  assert zero(ce_grads["halt"])
  assert zero({k: v for k, v in bce_grads.items() if k != "halt"})
  assert not zero(ce_grads["core"]) and not zero(bce_grads["halt"])
  if variant == "anira_o":   # under the penalty, cross-entropy trains the unit (one variant)
    assert not zero(terms(tiny_config(variant, halting__threshold=0.1))[0]["halt"])


def test_depth_stats_by_hand():
  depth = jnp.asarray([[1, 3, 0], [2, 3, 3]])
  mask = jnp.asarray([[True, True, False], [False, True, True]])
  probs = jnp.asarray([[[0.1, 0.2, 0.3], [0.4, 0.5, 0.6], [0.0, 0.0, 0.0]],
                       [[0.7, 0.8, 0.0], [0.2, 0.3, 1.0], [0.5, 0.5, 1.0]]])
  s = jax.tree.map(np.asarray, losses.depth_stats(depth, probs, mask))
  assert s["depth_sum"] == 1 + 3 + 3 + 3
  assert s["depth_sq_sum"] == 1 + 9 + 9 + 9
  np.testing.assert_array_equal(s["depth_hist"], [1, 0, 3])
  # Tokens reaching iteration t: (1,3,3,3) reach 0; (3,3,3) reach 1 and 2.
  np.testing.assert_allclose(s["halt_prob_sum"], [0.1 + 0.4 + 0.2 + 0.5, 0.5 + 0.3 + 0.5,
                                                  0.6 + 1.0 + 1.0], rtol=1e-6)
  np.testing.assert_array_equal(s["halt_prob_count"], [4, 3, 3])


def _split_uneven(cfg, batch):
  """Orders rows so the two halves hold different numbers of answer and real tokens."""
  order = np.argsort(batch["loss_mask"].sum(1), kind="stable")
  batch = {k: v[order] for k, v in batch.items()}
  half = len(order) // 2
  counts = [batch["loss_mask"][:half].sum(), batch["loss_mask"][half:].sum()]
  assert counts[0] != counts[1], counts
  return batch


@pytest.mark.parametrize("variant,penalty", [("anira_o", "ponder"), ("anira_e", "kl_geometric"),
                                             ("fixed", "ponder")])
def test_pmean_over_vmapped_devices_equals_global_loss(variant, penalty):
  cfg, params, batch = _setup(variant, penalty=penalty)
  batch = _split_uneven(cfg, batch)
  glob_loss, glob_aux = objective(cfg, params, batch)
  split = jax.tree.map(lambda x: x.reshape((2, x.shape[0] // 2) + x.shape[1:]), batch)
  per_device = lambda b: losses.objective(cfg, params, b, STEP, axis_name="data")
  dev_loss, dev_aux = jax.jit(jax.vmap(per_device, axis_name="data"))(split)
  assert float(dev_loss[0]) != pytest.approx(float(dev_loss[1]), rel=1e-3)
  assert float(jnp.mean(dev_loss)) == pytest.approx(float(glob_loss), rel=1e-6)
  for k in ("ce", "penalty"):
    assert float(jnp.mean(dev_aux["mean"][k])) == pytest.approx(float(glob_aux["mean"][k]),
                                                                rel=1e-6, abs=1e-9)
  for k in ("answer_tokens", "correct", "depth_sum"):
    assert float(jnp.sum(dev_aux["sum"][k])) == pytest.approx(float(glob_aux["sum"][k]))


def test_pmean_of_vmapped_gradients_equals_global_gradient():
  cfg, params, batch = _setup("anira_o")
  batch = _split_uneven(cfg, batch)
  glob_grads = jax.jit(jax.grad(lambda p: losses.objective(cfg, p, batch, STEP)[0]))(params)

  def per_device(b):
    g = jax.grad(lambda p: losses.objective(cfg, p, b, STEP, axis_name="data")[0])(params)
    return jax.lax.pmean(g, "data")

  split = jax.tree.map(lambda x: x.reshape((2, x.shape[0] // 2) + x.shape[1:]), batch)
  dev_grads = jax.jit(jax.vmap(per_device, axis_name="data"))(split)
  for g, d in zip(jax.tree.leaves(glob_grads), jax.tree.leaves(dev_grads)):
    np.testing.assert_allclose(d[0], g, rtol=2e-4, atol=1e-6)


def test_pmean_over_two_devices_with_shard_map():
  assert jax.device_count() == 2
  cfg, params, batch = _setup("anira_o")
  batch = _split_uneven(cfg, batch)
  glob_loss, _ = objective(cfg, params, batch)
  mesh = jax.make_mesh((2,), ("data",))

  @jax.jit
  @functools.partial(jax.shard_map, mesh=mesh, in_specs=(P("data"),), out_specs=(P("data"), P()))
  def run(b):
    loss, _ = losses.objective(cfg, params, b, STEP, axis_name="data")
    return loss[None], jax.lax.pmean(loss, "data")

  per_device, mean = run(jax.device_put(batch, NamedSharding(mesh, P("data"))))
  per_device = np.asarray(per_device)
  assert per_device.shape == (2,)
  assert float(per_device[0]) != pytest.approx(float(per_device[1]), rel=1e-3)
  assert float(mean) == pytest.approx(float(glob_loss), rel=1e-6)
