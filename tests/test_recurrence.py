"""recurrence.py: scan (training) and while_loop (inference) agree bitwise, compaction to float
rounding; halted tokens are frozen; PAD tokens never run; the whole model is causal, through the
halting decisions too."""
import functools
import json

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from anira_jax import halting, model, recurrence, runs
from anira_jax.tasks.base import PAD
from conftest import LOOPED, VARIANTS, forward, random_params, tiny_batch, tiny_config

# (variant, halting bias, threshold, output, temperature, while loop must stop before k_max)
RANDOM_CASES = [
    ("anira_o", 1.0, 0.1, "state", 1.0, False),
    ("anira_o", 2.0, 0.2, "distribution", 1.0, True),
    ("anira_o", 0.0, 0.1, "state", 0.5, False),
    ("anira_e", 2.0, 0.1, "state", 1.0, True),
    ("anira_e", 1.0, 0.1, "distribution", 2.0, False),
    ("fixed", 0.0, 0.01, "state", 1.0, False),
    ("transformer", 0.0, 0.01, "state", 1.0, False),
]


def _forward_fn(cfg, mode, use_jit):
  f = functools.partial(recurrence.forward, cfg, mode=mode)
  return jax.jit(f) if use_jit else f


def _inputs(cfg):
  """Two training batches of mixed sizes, so rows are padded by different amounts, padded
  further to the evaluation length (the shape training's evaluation compiled for)."""
  a, b = tiny_batch(cfg, 0)["inputs"], tiny_batch(cfg, 1)["inputs"]
  inputs = np.concatenate([a, b])
  assert (inputs == PAD).any() and (inputs != PAD).all(axis=1).any()
  return np.pad(inputs, ((0, 0), (0, 2 * max(cfg.task.eval_sizes) - inputs.shape[1])))


def _check_scan_equals_while(cfg, params, inputs, use_jit, expect_early_exit):
  k_max = cfg.model.k_max
  logits_s, final_s = _forward_fn(cfg, "scan", use_jit)(params, inputs)
  logits_w, final_w = _forward_fn(cfg, "while", use_jit)(params, inputs)
  np.testing.assert_array_equal(np.asarray(logits_s), np.asarray(logits_w))
  assert float(jnp.max(jnp.abs(logits_s - logits_w))) == 0.0
  np.testing.assert_array_equal(final_s.depth_BxL, final_w.depth_BxL)
  for field in ("h_BxLxD", "out_BxLxO", "survival_BxL", "halted_BxL", "weights_BxLxK",
                "probs_BxLxK", "logits_BxLxK"):
    np.testing.assert_array_equal(getattr(final_s, field), getattr(final_w, field), err_msg=field)
  assert int(final_s.t) == k_max
  iterations = int(final_w.t)
  depth = np.asarray(final_w.depth_BxL)[inputs != PAD]
  assert iterations == depth.max()   # the loop stops as soon as the deepest token halts
  if cfg.model.variant in LOOPED:
    assert len(np.unique(depth)) > 1, f"depths do not vary: {np.unique(depth)}"
  else:
    assert np.all(depth == k_max)
  if expect_early_exit:
    assert iterations < k_max
  return iterations


@pytest.mark.parametrize("use_jit", [False, True], ids=["eager", "jit"])
@pytest.mark.parametrize("variant,bias,threshold,output,temperature,early", RANDOM_CASES,
                         ids=[f"{c[0]}-{c[3]}-bias{c[1]}-T{c[4]}" for c in RANDOM_CASES])
def test_scan_equals_while_random_params(variant, bias, threshold, output, temperature, early,
                                         use_jit):
  cfg = tiny_config(variant, halting__threshold=threshold, halting__output=output,
                    halting__temperature=temperature)
  params = random_params(cfg, seed=1, halt_bias=bias)
  _check_scan_equals_while(cfg, params, _inputs(cfg), use_jit, early)


def test_scan_equals_while_in_bfloat16():
  """model.dtype=bfloat16 changes the numbers, not the exactness: both drivers run the same
  bfloat16 matmuls on the same float32 state, and halted tokens stay frozen (online halting, and
  the readout inside the loop: halting.output="distribution")."""
  variant, bias, threshold, output, temperature, early = RANDOM_CASES[1]
  cfg = tiny_config(variant, model__dtype="bfloat16", halting__threshold=threshold,
                    halting__output=output, halting__temperature=temperature)
  _check_scan_equals_while(cfg, random_params(cfg, seed=1, halt_bias=bias), _inputs(cfg), True,
                           early)


@pytest.mark.parametrize("variant", ["anira_o", "anira_e"])
def test_correctness_supervision_changes_training_only(variant):
  # The exit classifier is cut from the gradient, not from the forward pass: the same numbers.
  cfg = tiny_config(variant, halting__threshold=0.1)
  params = random_params(cfg, seed=1, halt_bias=1.0)
  inputs = _inputs(cfg)
  supervised = tiny_config(variant, halting__threshold=0.1, halting__supervision="correctness")
  _check_scan_equals_while(supervised, params, inputs, True, False)
  for mode in ("scan", "while"):
    a, b = forward(cfg, params, inputs, mode), forward(supervised, params, inputs, mode)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
      np.testing.assert_array_equal(x, y)


@pytest.mark.parametrize("variant", ["anira_o", "anira_e"])
def test_scan_equals_while_with_halting_unit_switched_off(variant):
  # halting.depth_warmup: the parameters training uses before the warm-up ends.
  cfg = tiny_config(variant)
  params = random_params(cfg, seed=1, halt_bias=2.0)
  params = {**params, "halt": halting.switched_off(params["halt"], jnp.asarray(0), 1)}
  inputs = _inputs(cfg)
  logits_s, final_s = recurrence.forward(cfg, params, inputs, mode="scan")
  logits_w, final_w = recurrence.forward(cfg, params, inputs, mode="while")
  np.testing.assert_array_equal(np.asarray(logits_s), np.asarray(logits_w))
  for field in final_s._fields:
    np.testing.assert_array_equal(getattr(final_s, field), getattr(final_w, field), err_msg=field)
  np.testing.assert_array_equal(np.asarray(final_w.depth_BxL)[inputs != PAD], cfg.model.k_max)


@pytest.mark.parametrize("variant", ["anira_o", "anira_e"])
def test_scan_equals_while_trained_params(trained_run, variant):
  """Briefly trained parameters (bias +1, threshold 0.1), eagerly and through the jitted
  user-facing predictor. (`fixed` and `transformer` run every token k_max iterations whatever
  their parameters: RANDOM_CASES covers them.)"""
  run = runs.load_run(str(trained_run(variant)))
  assert run.step == 30
  inputs = _inputs(run.config)
  _check_scan_equals_while(run.config, run.params, inputs, False, False)
  by_scan, by_while = run.predict(inputs, mode="scan"), run.predict(inputs, mode="while")
  np.testing.assert_array_equal(by_scan["logits"], by_while["logits"])
  np.testing.assert_array_equal(by_scan["depth"], by_while["depth"])
  assert int(by_scan["iterations"]) == run.config.model.k_max
  assert int(by_while["iterations"]) == by_while["depth"].max()


def test_while_loop_exits_early_on_trained_params(trained_run):
  """Halting bias +1 then 30 steps: some batch stops before k_max, so `while` really skips work."""
  run = runs.load_run(str(trained_run("anira_e")))
  k_max = run.config.model.k_max
  iterations = [int(run.predict(row[None], "while")["iterations"]) for row in _inputs(run.config)]
  assert min(iterations) < k_max
  assert max(iterations) <= k_max


# (variant, halting bias, threshold, output): tokens halt at varied depths, several per iteration.
COMPACT_CASES = [
    ("anira_o", 1.0, 0.1, "state"),
    ("anira_o", 2.0, 0.2, "distribution"),
    ("anira_o", -1.0, 0.3, "state"),
    ("anira_e", 2.0, 0.1, "state"),
    ("anira_e", 0.5, 0.2, "distribution"),
    ("fixed", 0.0, 0.01, "state"),
]


@pytest.mark.parametrize("variant,bias,threshold,output", COMPACT_CASES,
                         ids=[f"{c[0]}-{c[3]}-bias{c[1]}" for c in COMPACT_CASES])
def test_compact_equals_dense(variant, bias, threshold, output):
  """Token compaction gives the dense numbers up to float rounding, and the same depths and
  iterations; one row is padding only."""
  cfg = tiny_config(variant, halting__threshold=threshold, halting__output=output)
  params = random_params(cfg, seed=2, halt_bias=bias)
  inputs = _inputs(cfg)
  inputs[-1] = PAD
  logits_d, final_d = forward(cfg, params, inputs, "while")
  logits_c, final_c = forward(cfg, params, inputs, "compact")
  np.testing.assert_array_equal(final_c.depth_BxL, final_d.depth_BxL)
  np.testing.assert_array_equal(final_c.halted_BxL, final_d.halted_BxL)
  assert int(final_c.t) == int(final_d.t)
  np.testing.assert_allclose(logits_c, logits_d, rtol=1e-5, atol=1e-5)
  for field in ("h_BxLxD", "out_BxLxO", "survival_BxL", "weights_BxLxK", "probs_BxLxK"):
    np.testing.assert_allclose(getattr(final_c, field), getattr(final_d, field), rtol=1e-5,
                               atol=1e-5, err_msg=field)
  depth = np.asarray(final_d.depth_BxL)[inputs != PAD]
  if variant in LOOPED:
    assert len(np.unique(depth)) > 2, f"depths do not vary: {np.unique(depth)}"


def test_compact_rejects_the_transformer_baseline():
  cfg = tiny_config("transformer")
  with pytest.raises(ValueError, match="transformer baseline has a layer per iteration"):
    runs.predictor(cfg, "compact")(random_params(cfg), _inputs(cfg))


def _manual_steps(cfg, params, inputs):
  x = model.embed(cfg.model, params, inputs)
  h0 = model.prelude(cfg.model, params, x)
  early = (model.halt_logits(params, h0) if cfg.model.variant == "anira_e"
           else jnp.zeros(h0.shape[:2] + (cfg.model.k_max,)))
  out_dim = (model.vocab_size(params) if cfg.halting.output == "distribution"
             else cfg.model.d_model)
  s = recurrence.init_state(h0, jnp.asarray(inputs != PAD), cfg.model.k_max, out_dim)
  ctx = recurrence.Context(early, h0 if cfg.model.input_injection else None, None)
  states = [s]
  for _ in range(cfg.model.k_max):
    s = recurrence.step(cfg, params, ctx, s)
    states.append(jax.tree.map(np.asarray, s))
  return states


@pytest.mark.parametrize("variant,output", [("anira_o", "state"), ("anira_e", "state"),
                                            ("anira_o", "distribution")])
def test_halted_tokens_are_frozen_bitwise(variant, output):
  cfg = tiny_config(variant, halting__threshold=0.1, halting__output=output)
  params = random_params(cfg, seed=1, halt_bias=1.0)
  inputs = _inputs(cfg)
  states = _manual_steps(cfg, params, inputs)
  k_max = cfg.model.k_max
  halted_early = 0
  for t in range(k_max + 1):
    # Tokens halted at the end of iteration t (t = 0: PAD, halted from the start): every later
    # state equals state t.
    newly = np.asarray(states[t].halted_BxL)
    if t > 0:
      newly = newly & ~np.asarray(states[t - 1].halted_BxL)
      halted_early += int(newly.sum()) if t < k_max else 0
    else:
      np.testing.assert_array_equal(newly, inputs == PAD)
    for later in states[t + 1:]:
      for field in ("h_BxLxD", "out_BxLxO", "depth_BxL", "survival_BxL", "halted_BxL"):
        np.testing.assert_array_equal(np.asarray(getattr(later, field))[newly],
                                      np.asarray(getattr(states[t], field))[newly],
                                      err_msg=f"{field} changed after halting at {t}")
      np.testing.assert_array_equal(later.weights_BxLxK[newly][:, t:], 0.0)
      np.testing.assert_array_equal(later.probs_BxLxK[newly][:, t:], 0.0)
    # Tokens still active did change: the freeze is selective, not a no-op step.
    active = ~np.asarray(states[max(t - 1, 0)].halted_BxL)
    if 0 < t < k_max and active.any():
      assert not np.array_equal(states[t].h_BxLxD[active], states[t - 1].h_BxLxD[active])
  assert halted_early > 0, "no token halted before the last iteration"
  assert np.asarray(states[-1].halted_BxL).all()


@pytest.mark.parametrize("variant", VARIANTS)
def test_padding_tokens_have_depth_zero(variant):
  cfg = tiny_config(variant, halting__threshold=0.1)
  params = random_params(cfg, halt_bias=1.0)
  inputs = _inputs(cfg)
  pad = inputs == PAD
  for mode in ("scan", "while") + (("compact",) if variant != "transformer" else ()):
    _, final = forward(cfg, params, inputs, mode)
    depth = np.asarray(final.depth_BxL)
    np.testing.assert_array_equal(depth[pad], 0)
    assert (depth[~pad] >= 1).all()
    np.testing.assert_array_equal(np.asarray(final.weights_BxLxK)[pad], 0.0)
    np.testing.assert_array_equal(np.asarray(final.probs_BxLxK)[pad], 0.0)


def test_all_padding_row_and_batch():
  """A batch made only of PAD halts immediately: zero iterations, zero depth."""
  cfg = tiny_config("anira_o")
  params = random_params(cfg)
  inputs = np.zeros((2, 6), np.int32)
  for mode in ("while", "compact"):
    _, final = forward(cfg, params, inputs, mode)
    assert int(final.t) == 0
    np.testing.assert_array_equal(final.depth_BxL, 0)


@pytest.mark.parametrize("variant,bias,threshold", [("anira_o", 1.0, 0.1),
                                                    ("anira_e", 1.0, 0.1),
                                                    ("fixed", 0.0, 0.01)])
def test_causality_through_halting(variant, bias, threshold):
  """d logits[b, i] / d x[b', j] is exactly zero for j > i (and for b' != b), in reverse mode.

  One jitted VJP per (b, i) with a random cotangent on logits[b, i, :]. (Not jit(jacrev):
  on JAX 0.10.2 CPU, jit(jacrev(f)) of a LayerNorm over a [3, 8, 16] input returns wrong
  numbers while eager jacrev, jacfwd and single VJPs agree; see the test report.)"""
  cfg = tiny_config(variant, halting__threshold=threshold)
  params = random_params(cfg, seed=1, halt_bias=bias)
  inputs = tiny_batch(cfg)["inputs"][:3]
  x = model.embed(cfg.model, params, inputs)
  valid = jnp.asarray(inputs != PAD)
  f = lambda x: recurrence.forward_embedded(cfg, params, x, valid, "scan")
  _, final = jax.jit(f)(x)
  depth = np.asarray(final.depth_BxL)[inputs != PAD]
  if variant in LOOPED:
    assert len(np.unique(depth)) > 1   # the gradient really passes through varied halting

  grad_of = jax.jit(lambda x, ct: jax.vjp(lambda x: f(x)[0], x)[1](ct)[0])
  B, L = inputs.shape
  vocab = model.vocab_size(params)
  rng = np.random.default_rng(0)
  for b in range(B):
    for i in range(L):
      ct = np.zeros((B, L, vocab), np.float32)
      ct[b, i] = rng.normal(size=vocab)
      g = np.asarray(grad_of(x, ct))                  # [B, L, D]
      np.testing.assert_array_equal(np.delete(g, b, axis=0), 0.0,
                                    err_msg=f"logits of row {b} depend on other rows")
      np.testing.assert_array_equal(g[b, i + 1:], 0.0,
                                    err_msg=f"row {b}: logits at {i} see the future")
      if inputs[b, i] != PAD:
        assert np.abs(g[b, i]).max() > 0     # not vacuous: position i depends on itself
        if i > 0:
          assert np.abs(g[b, :i]).max() > 0  # ... and on the past


@pytest.mark.parametrize("remat", ["full", "dots"])
def test_remat_keeps_forward_bitwise_and_gradients_close(remat):
  """model.remat changes what the backward pass stores, never the forward values."""
  cfg = tiny_config("anira_o", model__remat="none")
  params, inputs = random_params(cfg, halt_bias=1.0), _inputs(cfg)
  other = tiny_config("anira_o", model__remat=remat)

  def loss(c, p):
    logits, final = recurrence.forward(c, p, inputs)
    return jnp.mean(logits ** 2) + jnp.mean(final.weights_BxLxK ** 2), logits

  (value, logits), grads = jax.jit(jax.value_and_grad(functools.partial(loss, cfg),
                                                      has_aux=True))(params)
  (value_r, logits_r), grads_r = jax.jit(jax.value_and_grad(functools.partial(loss, other),
                                                            has_aux=True))(params)
  np.testing.assert_array_equal(np.asarray(logits), np.asarray(logits_r))
  assert float(value) == float(value_r)
  for g, g_r in zip(jax.tree.leaves(grads), jax.tree.leaves(grads_r)):
    np.testing.assert_allclose(g, g_r, rtol=1e-4, atol=1e-6)


# Forced depth: every token halts at iteration k ------------------------------------------------

FORCED_CASES = [("anira_o", "state"), ("anira_o", "distribution"), ("anira_e", "state"),
                ("anira_e", "distribution"), ("fixed", "state"), ("transformer", "state")]


@functools.cache
def _forced_forward(cfg_json: str, mode: str):
  cfg = ml_collections.ConfigDict(json.loads(cfg_json))
  return jax.jit(lambda params, inputs, k: recurrence.forward(cfg, params, inputs, mode, k))


def _truncated_mixture(cfg, params, inputs, k):
  """By hand: every token runs k iterations of the block; output weights are the model's own
  lambda_t * S_{t-1} before k and the remainder S_{k-2} at k."""
  h = model.prelude(cfg.model, params, model.embed(cfg.model, params, inputs))
  early = model.halt_logits(params, h)
  out, survival = 0.0, jnp.ones(h.shape[:2])
  for t in range(k):
    h = model.block(cfg.model, params, h, t)
    if cfg.model.variant == "anira_o":
      lam = jax.nn.sigmoid(model.halt_logits(params, h)[..., 0] / cfg.halting.temperature)
    elif cfg.model.variant == "anira_e":
      lam = jax.nn.sigmoid(early[..., t] / cfg.halting.temperature)
    else:
      lam = jnp.zeros(h.shape[:2])
    weight = survival if t == k - 1 else lam * survival
    part = (h if cfg.halting.output == "state"
            else jax.nn.softmax(model.readout(cfg.model, params, h)))
    out = out + weight[..., None] * part
    survival = survival * (1.0 - lam)
  if cfg.halting.output == "state":
    return model.readout(cfg.model, params, out)
  return jnp.log(jnp.maximum(out, recurrence.TINY))


@pytest.mark.parametrize("variant,output", FORCED_CASES)
def test_forced_depth_scan_equals_while_and_the_truncated_mixture(variant, output):
  cfg = tiny_config(variant, halting__output=output)
  params = random_params(cfg)
  inputs = _inputs(cfg)
  valid = inputs != PAD
  for k in range(1, cfg.model.k_max + 1):
    logits_s, final_s = _forced_forward(cfg.to_json(), "scan")(params, inputs, k)
    logits_w, final_w = _forced_forward(cfg.to_json(), "while")(params, inputs, k)
    np.testing.assert_array_equal(logits_s, logits_w)
    np.testing.assert_array_equal(final_s.weights_BxLxK, final_w.weights_BxLxK)
    np.testing.assert_array_equal(np.asarray(final_w.depth_BxL)[valid], k)
    np.testing.assert_array_equal(np.asarray(final_w.depth_BxL)[~valid], 0)
    assert int(final_w.t) == k
    expected = _truncated_mixture(cfg, params, inputs, k)
    np.testing.assert_allclose(np.asarray(logits_w)[valid], np.asarray(expected)[valid],
                               rtol=1e-5, atol=1e-5)
  if variant in ("fixed", "transformer"):   # k_max is what the baselines always run
    np.testing.assert_array_equal(logits_w, forward(cfg, params, inputs, "scan")[0])


def test_forced_depth_is_not_the_own_depth():
  # The comparison above can fail: forcing depth 1 changes what the model's own halting gives.
  cfg = tiny_config("anira_o")
  params = random_params(cfg)
  inputs = _inputs(cfg)
  own = forward(cfg, params, inputs, "while")[0]
  forced = _forced_forward(cfg.to_json(), "while")(params, inputs, 1)[0]
  assert not np.allclose(own, forced, atol=1e-3)


# Input injection and the iteration embedding ----------------------------------------------------

OFFSET_CASES = [("anira_o", True, False), ("anira_o", False, True), ("anira_e", True, True),
                ("fixed", True, False), ("transformer", True, True)]


def _offset_params(cfg):
  params = random_params(cfg)
  if cfg.model.iteration_embedding:
    params["iteration"] = jax.random.normal(jax.random.key(7), params["iteration"].shape)
  return params


@pytest.mark.parametrize("variant,injection,iteration", OFFSET_CASES)
def test_scan_equals_while_with_block_offsets(variant, injection, iteration):
  cfg = tiny_config(variant, model__input_injection=injection,
                    model__iteration_embedding=iteration)
  params = _offset_params(cfg)
  inputs = _inputs(cfg)
  _check_scan_equals_while(cfg, params, inputs, use_jit=True, expect_early_exit=False)
  plain = tiny_config(variant)
  without = {k: v for k, v in params.items() if k != "iteration"}
  assert not np.allclose(forward(cfg, params, inputs)[0], forward(plain, without, inputs)[0],
                         atol=1e-4)


def test_block_offset_by_hand():
  """One iteration reads state + prelude output + e_t and keeps the state free of them."""
  cfg = tiny_config("fixed", model__input_injection=True, model__iteration_embedding=True,
                    model__k_max=2)
  params = _offset_params(cfg)
  inputs = _inputs(cfg)
  h0 = model.prelude(cfg.model, params, model.embed(cfg.model, params, inputs))
  h = h0
  for t in range(2):
    c = h0 + params["iteration"][t][None, None]
    h = model.block(cfg.model, params, h + c, t) - c
  valid = inputs != PAD
  _, final = forward(cfg, params, inputs, "while")
  np.testing.assert_allclose(np.asarray(final.h_BxLxD)[valid], np.asarray(h)[valid], rtol=1e-5,
                             atol=1e-5)


def test_iteration_embedding_starts_as_without_it():
  cfg = tiny_config("anira_o", model__iteration_embedding=True)
  params = random_params(cfg)
  np.testing.assert_array_equal(params["iteration"], 0.0)
  without = {k: v for k, v in params.items() if k != "iteration"}
  inputs = _inputs(cfg)
  np.testing.assert_array_equal(forward(cfg, params, inputs)[0],
                                forward(tiny_config("anira_o"), without, inputs)[0])


def test_compact_with_input_injection_equals_dense():
  cfg = tiny_config("anira_o", model__input_injection=True, halting__bias_init=1.0)
  params = random_params(cfg)
  inputs = _inputs(cfg)
  logits_w, final_w = forward(cfg, params, inputs, "while")
  logits_c, final_c = forward(cfg, params, inputs, "compact")
  np.testing.assert_allclose(logits_c, logits_w, rtol=1e-5, atol=1e-5)
  np.testing.assert_array_equal(final_c.depth_BxL, final_w.depth_BxL)


def test_compact_rejects_the_iteration_embedding():
  cfg = tiny_config("anira_o", model__iteration_embedding=True)
  with pytest.raises(ValueError, match="iteration_embedding"):
    runs.predictor(cfg, "compact")(random_params(cfg), _inputs(cfg))


# Exits: the output had a token halted at each iteration -----------------------------------------

@functools.cache
def _exits(cfg_json: str):
  cfg = ml_collections.ConfigDict(json.loads(cfg_json))
  return jax.jit(lambda params, inputs: recurrence.forward_exits(cfg, params, inputs))


@pytest.mark.parametrize("variant,output", [("anira_o", "state"), ("anira_e", "distribution"),
                                            ("transformer", "state")])
def test_exits_equal_the_forced_depths_when_no_token_halts_early(variant, output):
  # Threshold 0: no token halts before k_max, so exit t is the output forced to depth t + 1.
  cfg = tiny_config(variant, halting__output=output, halting__threshold=0.0)
  params = random_params(cfg, halt_bias=0.0)
  inputs = _inputs(cfg)
  valid = inputs != PAD
  logits, exits, final = _exits(cfg.to_json())(params, inputs)
  assert np.all(np.asarray(final.depth_BxL)[valid] == cfg.model.k_max)
  np.testing.assert_array_equal(logits, forward(cfg, params, inputs, "scan")[0])
  for k in range(1, cfg.model.k_max + 1):
    forced = _forced_forward(cfg.to_json(), "while")(params, inputs, k)[0]
    np.testing.assert_allclose(np.asarray(exits[k - 1])[valid], np.asarray(forced)[valid],
                               rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("output", ["state", "distribution"])
def test_exits_from_the_halting_iteration_on_are_the_own_output(output):
  cfg = tiny_config("anira_o", halting__output=output, halting__threshold=0.2)
  params = random_params(cfg, halt_bias=1.0)
  inputs = _inputs(cfg)
  logits, exits, final = _exits(cfg.to_json())(params, inputs)
  depth = np.asarray(final.depth_BxL)
  valid = inputs != PAD
  assert len(np.unique(depth[valid])) > 1
  t = np.arange(cfg.model.k_max)[:, None, None]
  after = (t >= depth[None] - 1) & valid[None]
  own = np.broadcast_to(np.asarray(logits)[None], exits.shape)
  np.testing.assert_allclose(np.asarray(exits)[after], own[after], rtol=1e-5, atol=1e-5)
  before = (t < depth[None] - 1) & valid[None]
  assert before.any() and not np.allclose(np.asarray(exits)[before], own[before], atol=1e-3)


# halting.exit_rule="readout": the readout after each iteration decides ---------------------------

def test_readout_exit_rule_halts_where_its_exits_say_and_scan_equals_while():
  cfg = tiny_config("anira_o", halting__supervision="correctness",
                    halting__exit_rule="readout", halting__exit_confidence=0.26,
                    halting__exit_stability=0.2)
  params = random_params(cfg, seed=1)
  inputs = _inputs(cfg)
  _check_scan_equals_while(cfg, params, inputs, use_jit=True, expect_early_exit=True)
  logits, exits, final = _exits(cfg.to_json())(params, inputs)
  valid, depth = inputs != PAD, np.asarray(final.depth_BxL)
  # Halting weights are exactly 0 then 1: the output is the exit at the halting iteration.
  assert set(np.unique(np.asarray(final.probs_BxLxK))) <= {0.0, 1.0}
  halted_at = np.take_along_axis(np.asarray(exits), (depth - 1).clip(0)[None, ..., None],
                                 axis=0)[0]
  np.testing.assert_allclose(np.asarray(logits)[valid], halted_at[valid], rtol=1e-5, atol=1e-5)
  # The rule by hand on the exits (exit t is the readout after iteration t until the token halts).
  logp = np.asarray(jax.nn.log_softmax(exits))                       # [K, B, L, V]
  confident = logp.max(-1) >= np.log(0.26)
  kl = np.full(confident.shape, np.inf)
  kl[1:] = np.sum(np.exp(logp[1:]) * (logp[1:] - logp[:-1]), axis=-1)
  stable = kl < 0.2
  fires = confident | stable
  fires[-1] = True
  np.testing.assert_array_equal(depth[valid], (fires.argmax(0) + 1)[valid])
  first = fires.argmax(0)
  by = lambda x: np.take_along_axis(x, first[None], 0)[0][valid & (depth < cfg.model.k_max)]
  assert by(confident).any() and (by(stable) & ~by(confident)).any()   # both tests decide
