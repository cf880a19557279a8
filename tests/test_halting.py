"""halting.py: the ACT rule, output weights, penalties and the penalty schedule, by hand; a
penalty registered with @penalty_rule is trained on."""
import json
import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from anira_jax import halting, train
from conftest import VARIANTS, forward, random_params, tiny_batch, tiny_config


def f32(*values):
  return jnp.asarray(values, jnp.float32)


def test_conditional_probs_forced_to_one_at_last_step():
  logits = f32(-1e9, -3.0, 0.0, 2.0)
  np.testing.assert_array_equal(halting.conditional_probs(logits, jnp.asarray(3), 4),
                                np.ones(4, np.float32))
  # -inf logits (the fixed/transformer variants) too.
  np.testing.assert_array_equal(
      halting.conditional_probs(jnp.full((2,), -jnp.inf), jnp.asarray(2), 3), [1.0, 1.0])


@pytest.mark.parametrize("t", [0, 1, 2])
def test_conditional_probs_before_last_step_are_sigmoid(t):
  logits = f32(-2.0, 0.0, 2.0, -jnp.inf)
  lam = halting.conditional_probs(logits / 2.0, jnp.asarray(t), 4)
  expected = [1 / (1 + math.exp(1.0)), 0.5, 1 / (1 + math.exp(-1.0)), 0.0]
  np.testing.assert_allclose(lam, expected, rtol=1e-6)


class ActTest(chex.TestCase):
  """The ACT rule by hand, traced and eager (chex variants)."""

  @chex.variants(with_jit=True, without_jit=True)
  def test_hand_computed(self):
    # Token 0: continues. 1: survival drops to 0.0625 <= 0.1, halts, weight = remainder S_{t-1}.
    # 2: continues. 3: already halted, untouched. 4: S_t == threshold exactly, halts ("<=").
    lam = f32(0.5, 0.75, 0.25, 0.5, 0.5)
    survival = f32(0.5, 0.25, 1.0, 0.125, 0.25)
    halted = jnp.asarray([False, False, False, True, False])
    u = self.variant(halting.act, static_argnames="threshold")(lam, survival, halted,
                                                               threshold=0.125)
    chex.assert_trees_all_equal(u, halting.Update(
        weight_BxL=f32(0.25, 0.25, 0.25, 0.0, 0.25),
        survival_BxL=f32(0.25, 0.0625, 0.75, 0.125, 0.125),
        halted_BxL=jnp.asarray([False, True, False, True, True])))

  @chex.variants(with_jit=True, without_jit=True)
  def test_forced_last_step_puts_remainder_on_it(self):
    u = self.variant(halting.act, static_argnames="threshold")(
        f32(1.0, 1.0), f32(0.375, 1.0), jnp.asarray([False, False]), threshold=0.01)
    chex.assert_trees_all_equal(u, halting.Update(weight_BxL=f32(0.375, 1.0),
                                                  survival_BxL=f32(0.0, 0.0),
                                                  halted_BxL=jnp.asarray([True, True])))

  def test_mismatched_shapes_are_refused(self):
    with self.assertRaises(AssertionError):
      halting.act(f32(0.5, 0.5), f32(1.0), jnp.asarray([False, False]), 0.1)


@pytest.mark.parametrize("threshold", [0.0, 0.01, 0.3])
def test_weights_of_manual_run_sum_to_one(threshold):
  """Random lambdas through the rule for K steps: sum_t w_t = 1 and depth matches the rule."""
  k_max, n = 5, 64
  logits = 2.0 * jax.random.normal(jax.random.key(0), (k_max, n))
  survival, halted = jnp.ones(n), jnp.zeros(n, bool)
  weights, lams, depth = [], [], jnp.zeros(n, jnp.int32)
  for t in range(k_max):
    lam = halting.conditional_probs(logits[t], jnp.asarray(t), k_max)
    depth = depth + (~halted).astype(jnp.int32)
    u = halting.act(lam, survival, halted, threshold)
    weights.append(u.weight_BxL)
    lams.append(np.asarray(lam))
    survival, halted = u.survival_BxL, u.halted_BxL
  w = np.stack(weights, -1)
  assert np.all(halted)
  np.testing.assert_allclose(w.sum(-1), 1.0, rtol=1e-6)
  # Reference (float32, same products): first t with prod_{s<=t}(1 - lam_s) <= threshold, else K.
  expected = np.full(n, k_max)
  for i in range(n):
    s = np.float32(1.0)
    for t in range(k_max - 1):
      s = np.float32(s * (np.float32(1.0) - lams[t][i]))
      if s <= threshold:
        expected[i] = t + 1
        break
  np.testing.assert_array_equal(depth, expected)
  after_halt = np.arange(k_max)[None, :] >= expected[:, None]
  np.testing.assert_array_equal(w[after_halt], 0.0)
  if threshold == 0.3:
    assert len(set(expected.tolist())) > 2


@pytest.mark.parametrize("variant", VARIANTS)
def test_weights_of_full_run_sum_to_one_per_real_token(variant):
  cfg = tiny_config(variant, halting__threshold=0.1)
  params = random_params(cfg, halt_bias=1.0)
  batch = tiny_batch(cfg)
  _, final = forward(cfg, params, batch["inputs"], "scan")
  valid = batch["inputs"] != 0
  assert not valid.all()  # the batch has padding
  w = np.asarray(final.weights_BxLxK)
  np.testing.assert_allclose(w.sum(-1)[valid], 1.0, rtol=1e-5)
  np.testing.assert_array_equal(w[~valid], 0.0)
  if variant in ("fixed", "transformer"):
    one_hot_last = np.zeros(cfg.model.k_max, np.float32)
    one_hot_last[-1] = 1.0
    np.testing.assert_array_equal(w[valid], np.broadcast_to(one_hot_last, w[valid].shape))


def test_ponder_cost_hand_computed():
  w = f32(0.5, 0.3, 0.2, 0.0)[None, None].repeat(3, axis=1)  # [1, 3, 4]
  depth = jnp.asarray([[3, 1, 0]])
  np.testing.assert_allclose(halting.ponder_cost(w, depth), [[3.2, 1.5, 0.5]], rtol=1e-6)
  np.testing.assert_allclose(halting.penalty("ponder", w, jnp.zeros_like(w), depth,
                                             {"prior_lambda": 0.2}),
                             [[3.2, 1.5, 0.5]], rtol=1e-6)


def test_ponder_cost_gradient_flows_through_remainder_only():
  w = f32(0.5, 0.3, 0.2, 0.0)[None, None]
  g = jax.grad(lambda w: halting.ponder_cost(w, jnp.asarray([[3]])).sum())(w)
  np.testing.assert_array_equal(g, [[[0.0, 0.0, 1.0, 0.0]]])


def test_geometric_prior_hand_computed():
  # 0.5 * 0.5^k for k = 0, 1, 2 is (1/2, 1/4, 1/8), renormalised: (4/7, 2/7, 1/7).
  np.testing.assert_allclose(halting.geometric_prior(3, 0.5), [4 / 7, 2 / 7, 1 / 7], rtol=1e-6)


def _kl(kind, logits, depth, prior_lambda):
  logits = jnp.asarray(logits, jnp.float32)
  return halting.penalty(kind, jnp.zeros_like(logits), logits, jnp.asarray(depth),
                         {"prior_lambda": prior_lambda})


def test_log_weights_hand_computed():
  # lambda = 1/4, 1/3, 1/2: weights 1/4 each, and the remainder 1/4 at depth 4.
  logits = jnp.log(f32(1 / 3, 1 / 2, 1.0, 1.0))[None, None]
  log_w, reached = halting.log_weights(logits, jnp.asarray([[4]]))
  np.testing.assert_allclose(jnp.exp(log_w), [[[0.25] * 4]], rtol=1e-6)
  log_w, reached = halting.log_weights(logits, jnp.asarray([[2]]))   # remainder 3/4 at depth 2
  np.testing.assert_array_equal(reached, [[[True, True, False, False]]])
  np.testing.assert_allclose(jnp.exp(log_w)[reached], [0.25, 0.75], rtol=1e-6)


def test_kl_geometric_hand_computed():
  # lambda_0 = 1/2, halting at depth 2: weights (1/2, 1/2, 0).
  expected = 0.5 * math.log(0.5 / (4 / 7)) + 0.5 * math.log(0.5 / (2 / 7))
  got = _kl("kl_geometric", [[[0.0, 5.0, 5.0]]], [[2]], 0.5)
  np.testing.assert_allclose(got, [[expected]], rtol=1e-5)


def test_kl_uniform_hand_computed():
  logits = jnp.stack([f32(3.0, 0.0, 0.0, 0.0),                          # depth 1: (1, 0, 0, 0)
                      jnp.log(f32(1 / 3, 1 / 2, 1.0, 1.0)),               # (1/4, 1/4, 1/4, 1/4)
                      f32(0.0, -40.0, -40.0, 0.0)])[None]                 # (1/2, ~0, ~0, 1/2)
  got = _kl("kl_uniform", logits, [[1, 4, 4]], 0.2)
  np.testing.assert_allclose(got, [[math.log(4), 0.0, math.log(2)]], rtol=1e-6, atol=1e-6)


def test_kl_equals_its_weight_space_form():
  logits = jax.random.normal(jax.random.key(0), (2, 5, 6)) * 2
  depth = jax.random.randint(jax.random.key(1), (2, 5), 1, 7)
  log_w, reached = halting.log_weights(logits, depth)
  w = jnp.where(reached, jnp.exp(log_w), 0.0)
  np.testing.assert_allclose(jnp.sum(w, -1), 1.0, rtol=1e-5)
  prior = halting.geometric_prior(6, 0.3)
  by_weights = jnp.sum(jax.scipy.special.xlogy(w, w) - w * jnp.log(prior)[None, None], -1)
  np.testing.assert_allclose(_kl("kl_geometric", logits, depth, 0.3), by_weights, rtol=1e-5,
                             atol=1e-6)


@pytest.mark.parametrize("kind", ["kl_geometric", "kl_uniform"])
def test_kl_gradient_is_finite_when_an_active_weight_underflows(kind):
  # An active token whose halting probability underflows to 0 in float32 at t = 1: 0 log 0 in
  # weight space has an infinite derivative, and its gradient was NaN.
  logits = f32(0.0, -200.0, 0.0, 0.0)[None, None]
  g = jax.grad(lambda z: _kl(kind, z, [[4]], 0.3).sum())(logits)
  assert bool(jnp.all(jnp.isfinite(g))), g
  assert float(jnp.abs(g[..., 0]).sum()) > 0


def test_kl_of_padding_token_is_zero_and_finite():
  got = _kl("kl_geometric", jnp.zeros((1, 1, 3)), jnp.zeros((1, 1), jnp.int32), 0.2)
  np.testing.assert_array_equal(got, [[0.0]])


@pytest.mark.parametrize("step,expected", [(0, 0.0), (9, 0.0), (10, 0.02), (12, 0.06),
                                           (14, 0.1), (15, 0.1), (1000, 0.1)])
def test_penalty_scale_warmup_then_ramp(step, expected):
  scale = halting.penalty_scale(jnp.asarray(step), 0.1, warmup=10, ramp=5)
  assert float(scale) == pytest.approx(expected, rel=1e-6, abs=1e-9)


@pytest.mark.parametrize("step,expected", [(0, 0.0), (2, 0.0), (3, 0.5), (50, 0.5)])
def test_penalty_scale_without_ramp_jumps_to_full_weight(step, expected):
  assert float(halting.penalty_scale(jnp.asarray(step), 0.5, warmup=3, ramp=0)) == expected


def test_penalty_scale_no_warmup_is_full_from_start():
  assert float(halting.penalty_scale(jnp.asarray(0), 0.01, 0, 0)) == pytest.approx(0.01)


def test_unknown_penalty_raises():
  with pytest.raises(ValueError, match=r"unknown halting.penalty 'l2'.*ponder, kl_geometric"):
    halting.penalty("l2", jnp.zeros((1, 1, 2)), jnp.zeros((1, 1, 2)), jnp.ones((1, 1), jnp.int32),
                    {"prior_lambda": 0.2})


def test_penalties_are_the_registered_rules():
  assert list(halting.PENALTIES) == ["ponder", "kl_geometric", "kl_uniform"]
  with pytest.raises(ValueError, match="halting.penalty 'ponder' is already registered"):
    halting.penalty_rule("ponder")(lambda w, z, n, options: n)
  assert halting.PENALTIES["ponder"] is halting.ponder


def test_a_registered_penalty_is_what_training_adds_to_the_loss(tmp_path, depth_squared_penalty):
  # Steps 1-3 run with the halting unit off (halting.depth_warmup), so every token has depth
  # k_max = 4 and the toy penalty is 16 (the ponder cost would be about 5); from step 4 on depths
  # vary, and over answer tokens the penalty is their mean squared depth.
  cfg = tiny_config(halting__penalty=depth_squared_penalty, halting__penalty_tokens="answer",
                    halting__depth_warmup=3, train__steps=5, train__log_every=1)
  train.train_and_evaluate(cfg, str(tmp_path))
  logs = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
  assert [m["step"] for m in logs] == [1, 2, 3, 4, 5]
  for m in logs:
    assert m["penalty_scale"] == pytest.approx(cfg.halting.penalty_weight)
    assert m["loss"] == pytest.approx(m["ce"] + m["penalty_scale"] * m["penalty"], rel=1e-6)
  for m in logs[:3]:
    assert m["depth_fraction"] == [0.0, 0.0, 0.0, 1.0]
    assert m["penalty"] == pytest.approx(16.0, rel=1e-6)
  for m in logs[3:]:
    assert m["depth_std"] > 0
    assert m["penalty"] == pytest.approx(m["mean_depth"] ** 2 + m["depth_std"] ** 2, rel=1e-5)


def test_switched_off_holds_logits_then_returns_params_unchanged():
  params = {"kernel": jnp.full((4, 1), 0.5), "bias": jnp.full((1,), 2.0)}
  off = halting.switched_off(params, jnp.asarray(9), 10)
  np.testing.assert_array_equal(off["kernel"], 0.0)
  np.testing.assert_array_equal(off["bias"], halting.OFF_LOGIT)
  on = halting.switched_off(params, jnp.asarray(10), 10)
  for key in params:
    np.testing.assert_array_equal(on[key], params[key])
