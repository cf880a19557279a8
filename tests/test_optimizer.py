"""optimizer.py: the AdamW update, its decay mask, and the halting unit's own moments."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from anira_jax import optimizer
from conftest import random_params, tiny_config


def _params():
  return {"core": {"kernel": jnp.ones((2, 2)), "bias": jnp.ones((2,))},
          "halt": {"kernel": jnp.ones((2, 1)), "bias": jnp.full((1,), -3.0)}}


def test_decay_mask_covers_matrices_only():
  cfg = tiny_config("anira_o", model__iteration_embedding=True, halting__input_norm=True)
  mask = optimizer.decay_mask(random_params(cfg))
  flat = {"/".join(str(getattr(k, "key", k)) for k in path): v
          for path, v in jax.tree_util.tree_leaves_with_path(mask)}
  assert flat["embed/embedding"] and flat["core/qkv/kernel"] and flat["halt/kernel"]
  assert not flat["halt/bias"] and not flat["halt/norm/scale"] and not flat["iteration"]
  assert not flat["core/attn_norm/scale"] and not flat["readout/out/bias"]


def test_halting_bias_is_not_decayed():
  cfg = tiny_config("anira_o", train__weight_decay=0.5, train__warmup_steps=1)
  opt = optimizer.make(cfg)
  params = _params()
  state = opt.init(params)
  zero = jax.tree.map(jnp.zeros_like, params)
  updates, _ = opt.update(zero, state, params)
  _, state = opt.update(zero, state, params)   # step 0 has learning rate 0 (warm-up)
  updates, _ = opt.update(zero, state, params)
  np.testing.assert_array_equal(updates["halt"]["bias"], 0.0)
  np.testing.assert_array_equal(updates["core"]["bias"], 0.0)
  assert float(jnp.abs(updates["halt"]["kernel"]).min()) > 0   # kernels do decay


@pytest.mark.parametrize("warmup", [0, 3000])
def test_halting_moments_start_when_the_unit_is_switched_on(warmup):
  # Constant learning rate; the unit gets no gradient for `warmup` steps, then gradient 1. Its
  # first update is then a first Adam step (|m_hat / sqrt(v_hat)| = 1): one learning rate, not
  # the (1 - b1) / sqrt(1 - b2) ~ 3.2 learning rates of moments bias-corrected for unseen steps.
  cfg = tiny_config("anira_o", train__weight_decay=0.0, train__warmup_steps=0,
                    train__steps=10_000, halting__depth_warmup=warmup)
  opt = optimizer.make(cfg)
  params = _params()
  state = opt.init(params)
  step = jax.jit(opt.update)
  rest = jax.tree.map(jnp.ones_like, params["core"])
  for _ in range(warmup):
    _, state = step({"core": rest, "halt": jax.tree.map(jnp.zeros_like, params["halt"])},
                    state, params)
  updates, _ = step({"core": rest, "halt": jax.tree.map(jnp.ones_like, params["halt"])},
                    state, params)
  lr = float(optax.warmup_cosine_decay_schedule(0.0, 1e-3, 0, 10_000, 1e-4)(warmup))
  lr = cfg.train.learning_rate * lr / 1e-3
  np.testing.assert_allclose(updates["halt"]["bias"], [-lr], rtol=1e-4)
