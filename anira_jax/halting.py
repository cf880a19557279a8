"""One halting abstraction for both decision timings.

Both variants give, per token and iteration t = 0..K-1, a conditional halting probability
lambda_t = sigmoid(logit_t / temperature) (lambda_{K-1} = 1). anira_o computes logit_t from the
state after iteration t; anira_e computes all K logits at once from the prelude output. The rest
is shared:
  * halting distribution  p_t = lambda_t * S_{t-1},  survival S_t = prod_{s<=t} (1 - lambda_s);
  * hard rule (ACT)        a token halts at the first t with S_t <= threshold (or at t = K-1);
                           depth N = t + 1 block applications, its state is frozen from then on;
  * output weights         w_t = p_t for t < N-1 and w_{N-1} = S_{N-2} (the remainder R), sum 1;
  * compute penalty        a rule registered with `@penalty_rule(name)` (PENALTIES): ponder (N + R),
                           or KL(w || prior) with a geometric or uniform prior, computed in log
                           space from the logits (no log of an underflowed weight).
A forced depth k replaces the hard rule: every token halts at iteration k whatever lambda says, and
its output weights are the model's own before k with the remainder at k (`act(forced_now=...)`).
"""
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import chex
import jax
import jax.numpy as jnp

# A per-token compute penalty [B, L] from the output weights [B, L, K], the scaled halting logits
# [B, L, K], the depth [B, L] (0 for padding) and the config's halting.* fields.
Penalty = Callable[[jax.Array, jax.Array, jax.Array, Mapping[str, Any]], jax.Array]
PENALTIES: dict[str, Penalty] = {}   # halting.penalty name -> rule, filled by @penalty_rule


def penalty_rule(name: str) -> Callable[[Penalty], Penalty]:
  """Registers the decorated function as the penalty `halting.penalty=name`."""
  def register(rule: Penalty) -> Penalty:
    if name in PENALTIES:
      raise ValueError(f"halting.penalty {name!r} is already registered")
    PENALTIES[name] = rule
    return rule
  return register


def conditional_probs(scaled_logits_BxL: jax.Array, t: jax.Array, k_max: int) -> jax.Array:
  """lambda_t = sigmoid(logit_t / temperature) from the scaled logits, forced to 1 at the last
  iteration so every token halts by K_max."""
  return jnp.where(t == k_max - 1, 1.0, jax.nn.sigmoid(scaled_logits_BxL))


class Update(NamedTuple):
  weight_BxL: jax.Array     # w_t (0 for tokens already halted)
  survival_BxL: jax.Array   # S_t for active tokens, unchanged for halted ones
  halted_BxL: jax.Array     # halted at or before t


def act(lam_BxL: jax.Array, survival_BxL: jax.Array, halted_BxL: jax.Array,
        threshold: float, forced_now: jax.Array | None = None) -> Update:
  """Applies the ACT rule at one iteration to the tokens still active (not `halted_BxL`).

  `forced_now` (a bool scalar), when given, replaces the rule: every active token halts exactly
  when it is True (a forced depth)."""
  chex.assert_equal_shape([lam_BxL, survival_BxL, halted_BxL])
  active = ~halted_BxL
  new_survival = survival_BxL * (1.0 - lam_BxL)
  halt_now = active & (new_survival <= threshold if forced_now is None else forced_now)
  weight = jnp.where(halt_now, survival_BxL, lam_BxL * survival_BxL)
  return Update(weight_BxL=jnp.where(active, weight, 0.0),
                survival_BxL=jnp.where(active, new_survival, survival_BxL),
                halted_BxL=halted_BxL | halt_now)


def ponder_cost(weights_BxLxK: jax.Array, depth_BxL: jax.Array) -> jax.Array:
  """ACT's N + R: depth plus the remainder weight at the halting step (gradient through R)."""
  remainder = jnp.take_along_axis(weights_BxLxK, jnp.maximum(depth_BxL - 1, 0)[..., None],
                                  axis=-1)[..., 0]
  return depth_BxL + remainder


def geometric_prior(k_max: int, prior_lambda: float) -> jax.Array:
  """Prior over depths 1..K: geometric(prior_lambda), truncated and renormalised."""
  p = prior_lambda * (1.0 - prior_lambda) ** jnp.arange(k_max)
  return p / p.sum()


def log_weights(logits_BxLxK: jax.Array, depth_BxL: jax.Array) -> tuple[jax.Array, jax.Array]:
  """(log w_t, t < N) from the scaled halting logits z_t = logit_t / temperature and the depth N:
  log lambda_t + log S_{t-1} before the halting iteration, log S_{N-2} (the remainder) at it.
  Entries from N on are 0 and masked out; every value is finite, so are its gradients."""
  k_max = logits_BxLxK.shape[-1]
  log_not_BxLxK = jax.nn.log_sigmoid(-logits_BxLxK)             # log(1 - lambda_t)
  log_survival_before = jnp.concatenate(                          # log S_{t-1}, S_{-1} = 1
      [jnp.zeros_like(log_not_BxLxK[..., :1]), jnp.cumsum(log_not_BxLxK[..., :-1], axis=-1)],
      axis=-1)
  t_1x1xK = jnp.arange(k_max)[None, None, :]
  last_BxLx1 = depth_BxL[..., None] - 1
  reached = t_1x1xK <= last_BxLx1
  log_w = log_survival_before + jnp.where(t_1x1xK < last_BxLx1, jax.nn.log_sigmoid(logits_BxLxK),
                                          0.0)
  return jnp.where(reached, log_w, 0.0), reached


def kl_to_prior(logits_BxLxK: jax.Array, depth_BxL: jax.Array, prior_K: jax.Array) -> jax.Array:
  """KL(w || prior) per token, from the logits in log space (0 for padding, depth 0)."""
  log_w, reached = log_weights(logits_BxLxK, depth_BxL)
  log_prior_1x1xK = jnp.log(prior_K)[None, None, :]
  return jnp.sum(jnp.where(reached, jnp.exp(log_w) * (log_w - log_prior_1x1xK), 0.0), axis=-1)


@penalty_rule("ponder")
def ponder(weights_BxLxK: jax.Array, logits_BxLxK: jax.Array, depth_BxL: jax.Array,
           options: Mapping[str, Any]) -> jax.Array:
  """ACT's ponder cost N + R."""
  del logits_BxLxK, options
  return ponder_cost(weights_BxLxK, depth_BxL)


@penalty_rule("kl_geometric")
def kl_geometric(weights_BxLxK: jax.Array, logits_BxLxK: jax.Array, depth_BxL: jax.Array,
                 options: Mapping[str, Any]) -> jax.Array:
  """KL(w || geometric(prior_lambda) prior over depths)."""
  prior_K = geometric_prior(weights_BxLxK.shape[-1], options["prior_lambda"])
  return kl_to_prior(logits_BxLxK, depth_BxL, prior_K)


@penalty_rule("kl_uniform")
def kl_uniform(weights_BxLxK: jax.Array, logits_BxLxK: jax.Array, depth_BxL: jax.Array,
               options: Mapping[str, Any]) -> jax.Array:
  """KL(w || uniform prior over depths)."""
  K = weights_BxLxK.shape[-1]
  return kl_to_prior(logits_BxLxK, depth_BxL, jnp.full((K,), 1.0 / K))


def penalty(kind: str, weights_BxLxK: jax.Array, logits_BxLxK: jax.Array, depth_BxL: jax.Array,
            options: Mapping[str, Any]) -> jax.Array:
  """Per-token compute penalty of the registered rule `kind` (`logits`: scaled halting logits per
  iteration; `options`: the config's halting.* fields)."""
  if kind not in PENALTIES:
    raise ValueError(f"unknown halting.penalty {kind!r}; valid: {', '.join(PENALTIES)}")
  return PENALTIES[kind](weights_BxLxK, logits_BxLxK, depth_BxL, options)


OFF_LOGIT = -30.0   # sigmoid(-30) ~ 1e-13: a halting unit held here never halts a token early


def switched_off(halt_params: dict, step: jax.Array, depth_warmup: int) -> dict:
  """The halting unit's parameters before step `depth_warmup`: logits held at OFF_LOGIT, so every
  token runs K_max iterations (a fixed-depth model) and no gradient reaches the unit; unchanged
  from then on."""
  off = step < depth_warmup
  return {**halt_params, "kernel": jnp.where(off, 0.0, halt_params["kernel"]),
          "bias": jnp.where(off, OFF_LOGIT, halt_params["bias"])}


def at_step(params: dict, step: jax.Array, depth_warmup: int) -> dict:
  """The model that training at `step` runs: the halting unit switched off during the warm-up.
  Training, evaluation and loaded runs all go through here, so they agree at every step."""
  return {**params, "halt": switched_off(params["halt"], step, depth_warmup)}


def penalty_scale(step: jax.Array, weight: float, warmup: int, ramp: int) -> jax.Array:
  """Penalty weight at a train step: 0 for `warmup` steps, then a linear ramp over `ramp` steps."""
  progress = jnp.clip((step - warmup + 1) / max(ramp, 1), 0.0, 1.0)
  return weight * progress
