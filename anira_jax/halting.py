"""One halting abstraction for both decision timings.

Both variants give, per token and iteration t = 0..K-1, a conditional halting probability
lambda_t = sigmoid(logit_t / temperature) (lambda_{K-1} = 1). anira_o computes logit_t from the
state after iteration t; anira_e computes all K logits at once from the prelude output. The rest
is shared:
  * halting distribution  p_t = lambda_t * S_{t-1},  survival S_t = prod_{s<=t} (1 - lambda_s);
  * hard rule (ACT)        a token halts at the first t with S_t <= threshold (or at t = K-1);
                           depth N = t + 1 block applications, its state is frozen from then on;
  * output weights         w_t = p_t for t < N-1 and w_{N-1} = S_{N-2} (the remainder R), sum 1;
  * compute penalty        ponder (N + R), or KL(w || prior) with a geometric or uniform prior.
"""
from typing import NamedTuple

import jax
import jax.numpy as jnp

PENALTIES = ("ponder", "kl_geometric", "kl_uniform")


def conditional_probs(logits_BxL: jax.Array, t: jax.Array, k_max: int,
                      temperature: float) -> jax.Array:
  """lambda_t, forced to 1 at the last iteration so every token halts by K_max."""
  return jnp.where(t == k_max - 1, 1.0, jax.nn.sigmoid(logits_BxL / temperature))


class Update(NamedTuple):
  weight_BxL: jax.Array     # w_t (0 for tokens already halted)
  survival_BxL: jax.Array   # S_t for active tokens, unchanged for halted ones
  halted_BxL: jax.Array     # halted at or before t


def update(lam_BxL: jax.Array, survival_BxL: jax.Array, halted_BxL: jax.Array,
           threshold: float) -> Update:
  """Applies the ACT rule at one iteration to the tokens still active (not `halted_BxL`)."""
  active = ~halted_BxL
  new_survival = survival_BxL * (1.0 - lam_BxL)
  halt_now = active & (new_survival <= threshold)
  weight = jnp.where(halt_now, survival_BxL, lam_BxL * survival_BxL)
  return Update(weight_BxL=jnp.where(active, weight, 0.0),
                survival_BxL=jnp.where(active, new_survival, survival_BxL),
                halted_BxL=halted_BxL | halt_now)


def ponder_cost(weights_BxLxK: jax.Array, depth_BxL: jax.Array) -> jax.Array:
  """ACT's N + R: depth plus the remainder weight at the halting step (gradient through R)."""
  remainder = jnp.take_along_axis(weights_BxLxK, jnp.maximum(depth_BxL - 1, 0)[..., None],
                                  axis=-1)[..., 0]
  return depth_BxL + remainder


def depth_prior(kind: str, k_max: int, prior_lambda: float) -> jax.Array:
  """Prior over depths 1..K: geometric(prior_lambda) truncated and renormalised, or uniform."""
  if kind == "kl_uniform":
    return jnp.full((k_max,), 1.0 / k_max)
  p = prior_lambda * (1.0 - prior_lambda) ** jnp.arange(k_max)
  return p / p.sum()


def kl_to_prior(weights_BxLxK: jax.Array, prior_K: jax.Array) -> jax.Array:
  """KL(w || prior) per token, with 0 log 0 = 0."""
  return jnp.sum(jax.scipy.special.xlogy(weights_BxLxK, weights_BxLxK)
                 - weights_BxLxK * jnp.log(prior_K)[None, None, :], axis=-1)


def penalty(kind: str, weights_BxLxK: jax.Array, depth_BxL: jax.Array,
            prior_lambda: float) -> jax.Array:
  """Per-token compute penalty of the chosen kind."""
  if kind == "ponder":
    return ponder_cost(weights_BxLxK, depth_BxL)
  if kind in ("kl_geometric", "kl_uniform"):
    return kl_to_prior(weights_BxLxK, depth_prior(kind, weights_BxLxK.shape[-1], prior_lambda))
  raise ValueError(f"unknown halting.penalty {kind!r}; valid: {', '.join(PENALTIES)}")


OFF_LOGIT = -30.0   # sigmoid(-30) ~ 1e-13: a halting unit held here never halts a token early


def switched_off(halt_params: dict, step: jax.Array, depth_warmup: int) -> dict:
  """The halting unit's parameters before step `depth_warmup`: logits held at OFF_LOGIT, so every
  token runs K_max iterations (a fixed-depth model) and no gradient reaches the unit; unchanged
  from then on."""
  off = step < depth_warmup
  return {"kernel": jnp.where(off, 0.0, halt_params["kernel"]),
          "bias": jnp.where(off, OFF_LOGIT, halt_params["bias"])}


def penalty_scale(step: jax.Array, weight: float, warmup: int, ramp: int) -> jax.Array:
  """Penalty weight at a train step: 0 for `warmup` steps, then a linear ramp over `ramp` steps."""
  progress = jnp.clip((step - warmup + 1) / max(ramp, 1), 0.0, 1.0)
  return weight * progress
