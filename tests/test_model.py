"""model.py: the variant descriptions, parameter layout per variant, rotary embeddings, the
core layer indexing, and what runs in the compute dtype (model.dtype)."""
import jax
from jax.extend import core as jax_core
import jax.numpy as jnp
import numpy as np
import pytest

from anira_jax import losses, model, recurrence
from anira_jax.tasks.base import PAD
from conftest import VARIANTS, forward, random_params, tiny_batch, tiny_config

VOCAB = 18  # sorting with 16 values + PAD + SEP


def _layer_shapes(d: int, heads: int, mlp: int) -> dict:
  k = d // heads
  return {
      "attn_norm": {"scale": (d,), "bias": (d,)},
      "qkv": {"kernel": (d, 3, heads, k), "bias": (3, heads, k)},
      "attn_out": {"kernel": (heads, k, d), "bias": (d,)},
      "mlp_norm": {"scale": (d,), "bias": (d,)},
      "mlp_in": {"kernel": (d, mlp * d), "bias": (mlp * d,)},
      "mlp_out": {"kernel": (mlp * d, d), "bias": (d,)},
  }


def _shapes(tree):
  return jax.tree.map(lambda x: tuple(x.shape), tree)


@pytest.mark.parametrize("variant", VARIANTS)
def test_param_shapes(variant):
  cfg = tiny_config(variant, model__prelude_layers=2)
  m = cfg.model
  params = random_params(cfg)
  layer = _layer_shapes(m.d_model, m.num_heads, m.mlp_ratio)
  assert set(params) == {"embed", "prelude", "core", "halt", "readout"}
  assert _shapes(params["embed"]) == {"embedding": (VOCAB, m.d_model)}
  assert [_shapes(p) for p in params["prelude"]] == [layer, layer]
  if variant == "transformer":   # K distinct layers stacked on axis 0
    assert _shapes(params["core"]) == jax.tree.map(lambda s: (m.k_max,) + s, layer,
                                                   is_leaf=lambda x: isinstance(x, tuple))
  else:                          # one shared layer
    assert _shapes(params["core"]) == layer
  halt_out = m.k_max if variant == "anira_e" else 1
  assert _shapes(params["halt"]) == {"kernel": (m.d_model, halt_out), "bias": (halt_out,)}
  assert _shapes(params["readout"]) == {"norm": {"scale": (m.d_model,), "bias": (m.d_model,)},
                                        "out": {"kernel": (m.d_model, VOCAB), "bias": (VOCAB,)}}


@pytest.mark.parametrize("name", VARIANTS)
def test_variant_description_is_what_the_model_does(name):
  """model.VARIANTS[name] against the parameters, the recurrence and the loss of that variant."""
  cfg = tiny_config(name)
  v, m = model.VARIANTS[name], cfg.model
  assert model.variant(m) is v
  params = random_params(cfg)
  batch = tiny_batch(cfg)
  valid = batch["inputs"] != PAD
  # The core: k_max distinct layers, or one layer shared by every iteration.
  assert params["core"]["qkv"]["kernel"].shape[:1] == ((m.k_max,) if v.stacked else (m.d_model,))
  h = jax.random.normal(jax.random.key(8), (2, 5, m.d_model))
  assert (not np.array_equal(model.block(m, params, h, 0), model.block(m, params, h, 1))
          == v.stacked)
  if v.stacked:
    with pytest.raises(ValueError, match="compact"):
      recurrence.forward(cfg, params, batch["inputs"], "compact")
  # The halting logits: from the state after the iteration, from the prelude, or none at all.
  assert params["halt"]["kernel"].shape == (m.d_model, m.k_max if v.halting == "early" else 1)
  h0 = model.prelude(m, params, model.embed(m, params, batch["inputs"]))
  _, final = forward(cfg, params, batch["inputs"])
  source = {"online": lambda: model.halt_logits(params, model.block(m, params, h0, 0)),
            "early": lambda: model.halt_logits(params, h0),
            None: lambda: jnp.full(h0.shape[:2] + (1,), -jnp.inf)}[v.halting]()
  np.testing.assert_allclose(np.asarray(final.logits_BxLxK)[..., 0][valid],
                             np.asarray(source[..., 0] / cfg.halting.temperature)[valid],
                             rtol=1e-5, atol=1e-5)
  if v.halting == "early":   # every column is decided before the first iteration
    ran = np.asarray(final.depth_BxL)[..., None] > np.arange(m.k_max)
    np.testing.assert_allclose(np.asarray(final.logits_BxLxK)[ran], np.asarray(source)[ran],
                               rtol=1e-5, atol=1e-5)
  # Adaptive depth: a halting unit that says "halt" stops every token after one iteration; the
  # fixed-depth variants ignore it and run k_max. The compute penalty applies only when adaptive.
  eager = random_params(cfg, halt_bias=30.0)
  depth = np.asarray(forward(cfg, eager, batch["inputs"], "while")[1].depth_BxL)
  np.testing.assert_array_equal(depth[valid], 1 if v.adaptive else m.k_max)
  _, metrics = losses.objective(cfg, params, batch, jnp.asarray(0))
  assert (float(metrics["mean"]["penalty"]) > 0) == v.adaptive


def _dot_operand_dtypes(jaxpr: jax_core.Jaxpr) -> list[tuple[tuple[str, ...], tuple]]:
  """(operand dtypes, operand shapes) of every matmul (dot_general) in jaxpr and its sub-jaxprs
  (scan and while bodies, ...)."""
  found = []
  for eqn in jaxpr.eqns:
    if eqn.primitive.name == "dot_general":
      found.append((tuple(str(v.aval.dtype) for v in eqn.invars),
                    tuple(v.aval.shape for v in eqn.invars)))
    for sub in jax_core.jaxprs_in_params(eqn.params):
      found += _dot_operand_dtypes(sub)
  return found


@pytest.mark.parametrize("variant", ["anira_o", "anira_e"])
def test_bfloat16_matmuls_with_float32_parameters_state_halting_and_loss(variant):
  """model.dtype=bfloat16: every matmul of the training objective's forward pass takes bfloat16
  operands but the halting unit's; the parameters, their gradients, the state, the halting
  quantities, the logits and every loss term are float32. Traced, not compiled."""
  cfg = tiny_config(variant, model__dtype="bfloat16", halting__output="distribution")
  params = random_params(cfg)
  batch = tiny_batch(cfg)
  objective = lambda p: losses.objective(cfg, p, batch, jnp.asarray(0))
  float32 = lambda tree: {x.dtype for x in jax.tree.leaves(tree)} == {jnp.dtype(jnp.float32)}
  assert float32(params)   # ... and equal to those of model.dtype=float32
  jax.tree.map(np.testing.assert_array_equal, params,
               random_params(tiny_config(variant, halting__output="distribution")))
  assert float32(jax.eval_shape(jax.grad(lambda p: objective(p)[0]), params))
  loss, metrics = jax.eval_shape(objective, params)
  assert float32([loss, metrics["mean"]])
  logits, final = jax.eval_shape(lambda p: recurrence.forward(cfg, p, batch["inputs"]), params)
  assert float32([logits, final.h_BxLxD, final.out_BxLxO, final.survival_BxL,
                  final.weights_BxLxK, final.probs_BxLxK, final.logits_BxLxK])
  x = jax.eval_shape(lambda p: model.embed(cfg.model, p, batch["inputs"]), params)
  assert x.dtype == jnp.bfloat16

  halt_kernel = params["halt"]["kernel"].shape
  dots = _dot_operand_dtypes(jax.make_jaxpr(objective)(params).jaxpr)
  assert {(d, s[1]) for d, s in dots if d != ("bfloat16", "bfloat16")} == {
      (("float32", "float32"), halt_kernel)}
  assert sum(d == ("bfloat16", "bfloat16") for d, _ in dots) >= 6 * (cfg.model.prelude_layers + 1)


@pytest.mark.parametrize("bias", [-3.0, 0.5])
def test_halt_bias_init(bias):
  cfg = tiny_config("anira_e")
  params = random_params(cfg, halt_bias=bias)
  np.testing.assert_array_equal(params["halt"]["bias"], np.full(cfg.model.k_max, bias, np.float32))


def test_transformer_layers_are_distinct():
  params = random_params(tiny_config("transformer"))
  kernels = np.asarray(params["core"]["qkv"]["kernel"])
  for i in range(len(kernels)):
    for j in range(i):
      assert not np.array_equal(kernels[i], kernels[j])


def test_rope_is_identity_at_position_zero():
  x = jax.random.normal(jax.random.key(0), (2, 1, 3, 8))
  np.testing.assert_array_equal(model.rope(x, jnp.zeros((1, 1), jnp.int32)), x)


def test_rope_preserves_norm():
  x = jax.random.normal(jax.random.key(0), (2, 16, 3, 8))
  y = model.rope(x, jnp.arange(16)[None])
  assert not np.allclose(y, x)
  np.testing.assert_allclose(np.linalg.norm(y, axis=-1), np.linalg.norm(x, axis=-1), rtol=1e-5)


def test_rope_scores_depend_only_on_relative_position():
  kq, kk = jax.random.split(jax.random.key(1))
  q = jax.random.normal(kq, (8,))
  k = jax.random.normal(kk, (8,))
  L = 24

  def score(m, n):
    """q at position m against k at position n, both rotated by rope."""
    qs = jnp.broadcast_to(q, (1, L, 1, 8))
    ks = jnp.broadcast_to(k, (1, L, 1, 8))
    positions = jnp.arange(L)[None]
    return float(jnp.dot(model.rope(qs, positions)[0, m, 0], model.rope(ks, positions)[0, n, 0]))

  for diff in (0, 1, 3, 7):
    reference = score(diff, 0)
    for shift in (1, 5, 16):
      assert score(diff + shift, shift) == pytest.approx(reference, rel=1e-4, abs=1e-4)
  # ... and the score really varies with the offset (rope is not the identity).
  assert len({round(score(d, 0), 3) for d in (0, 1, 3, 7)}) == 4


def test_rope_of_a_token_buffer_equals_rope_of_its_sequence():
  """Positions per token (a flat buffer, as compaction gathers them) or per sequence axis."""
  x = jax.random.normal(jax.random.key(6), (2, 5, 3, 8))
  positions = jnp.broadcast_to(jnp.arange(5), (2, 5))
  flat = model.rope(x.reshape(10, 3, 8), positions.reshape(10))
  np.testing.assert_array_equal(flat.reshape(x.shape), model.rope(x, jnp.arange(5)[None]))


def test_attend_by_positions_is_causal_attention():
  """Queries by position, also one query per sequence against all its keys (as compaction
  calls it), give causal attention."""
  q, k, v = jax.random.normal(jax.random.key(7), (3, 2, 6, 2, 4))
  causal = jax.nn.dot_product_attention(q, k, v, is_causal=True)
  np.testing.assert_array_equal(model.attend(q, k, v, jnp.broadcast_to(jnp.arange(6), (2, 6))),
                                causal)
  one = model.attend(q[:, 4:5], k, v, jnp.full((2, 1), 4))
  np.testing.assert_allclose(one, causal[:, 4:5], rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("variant", VARIANTS)
def test_block_applies_layer_t(variant):
  cfg = tiny_config(variant)
  params = random_params(cfg)
  h = jax.random.normal(jax.random.key(2), (2, 5, cfg.model.d_model))
  layer = model.Layer(cfg.model.d_model, cfg.model.num_heads, cfg.model.mlp_ratio,
                      cfg.model.positions, jnp.float32)
  outs = []
  for t in range(cfg.model.k_max):
    core = (jax.tree.map(lambda p, t=t: p[t], params["core"]) if variant == "transformer"
            else params["core"])
    expected = layer.apply({"params": core}, h)
    got = model.block(cfg.model, params, h, jnp.asarray(t, jnp.int32))
    np.testing.assert_array_equal(got, expected)
    outs.append(np.asarray(got))
  distinct = not np.array_equal(outs[0], outs[1])
  assert distinct == (variant == "transformer")


def test_block_t_under_jit_indexes_traced_layer():
  cfg = tiny_config("transformer")
  params = random_params(cfg)
  h = jax.random.normal(jax.random.key(3), (1, 4, cfg.model.d_model))
  jitted = jax.jit(lambda t: model.block(cfg.model, params, h, t))
  for t in range(cfg.model.k_max):
    np.testing.assert_allclose(jitted(jnp.asarray(t)), model.block(cfg.model, params, h, t),
                               rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("positions", ["rope", "none"])
def test_layer_is_causal(positions):
  """Changing a later token never changes an earlier token's output."""
  cfg = tiny_config("fixed", model__positions=positions)
  params = random_params(cfg)
  h = jax.random.normal(jax.random.key(4), (1, 6, cfg.model.d_model))
  h2 = h.at[:, 4].add(1.0)
  a = model.block(cfg.model, params, h, 0)
  b = model.block(cfg.model, params, h2, 0)
  np.testing.assert_array_equal(a[:, :4], b[:, :4])
  assert not np.array_equal(a[:, 4], b[:, 4])


def test_block_accepts_host_params_with_traced_t():
  """Checkpoints restore as NumPy arrays; the transformer core must still be indexable by the
  loop counter (a tracer) outside jit."""
  cfg = tiny_config("transformer")
  params = jax.tree.map(np.asarray, random_params(cfg))
  h = jax.random.normal(jax.random.key(5), (1, 4, cfg.model.d_model))
  final, _ = jax.lax.scan(lambda h, t: (model.block(cfg.model, params, h, t), None), h,
                          jnp.arange(cfg.model.k_max))
  expected = h
  for t in range(cfg.model.k_max):
    expected = model.block(cfg.model, params, expected, t)
  np.testing.assert_allclose(final, expected, rtol=1e-5, atol=1e-5)


def test_normalised_halting_input_ignores_the_scale_of_the_state():
  cfg = tiny_config("anira_o", halting__input_norm=True)
  params = random_params(cfg, halt_bias=0.0)
  params["halt"]["kernel"] = jax.random.normal(jax.random.key(3), params["halt"]["kernel"].shape)
  h = jax.random.normal(jax.random.key(4), (2, 5, cfg.model.d_model))
  np.testing.assert_allclose(model.halt_logits(params, 5.0 * h), model.halt_logits(params, h),
                             rtol=1e-4, atol=1e-4)
  plain = {**params, "halt": {k: v for k, v in params["halt"].items() if k != "norm"}}
  assert not np.allclose(model.halt_logits(plain, 5.0 * h), model.halt_logits(plain, h),
                         atol=1e-2)
