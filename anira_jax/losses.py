"""Training objective: next-token cross-entropy on answer tokens plus the compute penalty, or,
when the halting unit is an exit classifier (halting.supervision="correctness"), cross-entropy on
every exit plus the classifier's binary cross-entropy (for `fixed`, which has no halting unit, the
cross-entropy on every iteration's readout alone: deep supervision).

Every term is a per-device sum divided by the mean count over devices, so averaging the per-device
values (lax.pmean) gives exactly the global mean, however unevenly answer tokens fall on devices.
"""
import chex
import jax
import jax.numpy as jnp
import ml_collections
import optax

from anira_jax import halting, model, recurrence
from anira_jax.tasks.base import PAD


def _mean_count(mask_BxL: jax.Array, axis_name: str | None) -> jax.Array:
  count = jnp.sum(mask_BxL.astype(jnp.float32))
  return count if axis_name is None else jax.lax.pmean(count, axis_name)


def depth_stats(depth_BxL: jax.Array, probs_BxLxK: jax.Array, mask_BxL: jax.Array) -> dict:
  """Sums over answer tokens, for logging: depth moments, histogram, mean lambda per iteration."""
  k_max = probs_BxLxK.shape[-1]
  m = mask_BxL.astype(jnp.float32)
  reached_BxLxK = (depth_BxL[..., None] > jnp.arange(k_max)[None, None, :]) & mask_BxL[..., None]
  return {
      "depth_sum": jnp.sum(depth_BxL * m),
      "depth_sq_sum": jnp.sum(jnp.square(depth_BxL) * m),
      "depth_hist": jnp.sum(jax.nn.one_hot(depth_BxL - 1, k_max) * m[..., None], axis=(0, 1)),
      "halt_prob_sum": jnp.sum(probs_BxLxK * reached_BxLxK, axis=(0, 1)),
      "halt_prob_count": jnp.sum(reached_BxLxK, axis=(0, 1)).astype(jnp.float32),
  }


def token_ce(logits_NxV: jax.Array, targets_N: jax.Array) -> jax.Array:
  """Cross-entropy of every token (any leading axes N; targets broadcast to them)."""
  targets_Nx1 = jnp.broadcast_to(targets_N, logits_NxV.shape[:-1])[..., None]
  return -jnp.take_along_axis(jax.nn.log_softmax(logits_NxV), targets_Nx1, axis=-1)[..., 0]


def exit_weights(k_max: int) -> jax.Array:
  """Weight of exit t = 0..K-1 in the cross-entropy under halting.supervision="correctness":
  proportional to t + 1, as CALM (Schuster et al. 2022) weights its layers' losses."""
  w_K = jnp.arange(1, k_max + 1, dtype=jnp.float32)
  return w_K / w_K.sum()


def exit_classifier_loss(logits_BxLxK: jax.Array, right_KxBxL: jax.Array, depth_BxL: jax.Array,
                         mask_BxL: jax.Array, axis_name: str | None) -> jax.Array:
  """Binary cross-entropy of every halting decision a masked token made (iterations t before its
  halt, the forced last one excluded) against whether exit t is right."""
  k_max = logits_BxLxK.shape[-1]
  t_1x1xK = jnp.arange(k_max)[None, None, :]
  decided_BxLxK = (t_1x1xK < depth_BxL[..., None]) & (t_1x1xK < k_max - 1) & mask_BxL[..., None]
  right_BxLxK = jnp.moveaxis(right_KxBxL, 0, -1).astype(jnp.float32)
  bce_BxLxK = optax.sigmoid_binary_cross_entropy(logits_BxLxK, right_BxLxK)
  return jnp.sum(bce_BxLxK * decided_BxLxK) / _mean_count(decided_BxLxK, axis_name)


def objective(cfg: ml_collections.ConfigDict, params: model.Params, batch: dict, step: jax.Array,
              axis_name: str | None = None) -> tuple[jax.Array, dict]:
  """(per-device loss, {"mean": per-device terms to pmean, "sum": per-device sums to psum})."""
  chex.assert_equal_shape([batch["inputs"], batch["targets"], batch["loss_mask"]])
  params = halting.at_step(params, step, cfg.halting.depth_warmup)
  h = cfg.halting
  adaptive = model.variant(cfg.model).adaptive
  answer_BxL = batch["loss_mask"]
  def ce_of(logits_NxBxLxV: jax.Array) -> jax.Array:   # mean over answer tokens (N: any axes)
    ce_NxBxL = token_ce(logits_NxBxLxV, batch["targets"])
    return (jnp.sum(ce_NxBxL * jnp.broadcast_to(answer_BxL, ce_NxBxL.shape), axis=(-2, -1))
            / _mean_count(answer_BxL, axis_name))
  if h.supervision == "correctness":
    logits_BxLxV, exits_KxBxLxV, final = recurrence.forward_exits(cfg, params, batch["inputs"])
    ce = jnp.sum(exit_weights(cfg.model.k_max) * ce_of(exits_KxBxLxV))
    right_KxBxL = jnp.argmax(exits_KxBxLxV, -1) == batch["targets"][None]
    classifier = adaptive and h.exit_rule == "unit"   # else no unit decides: nothing to train
    pen = (exit_classifier_loss(final.logits_BxLxK, right_KxBxL, final.depth_BxL, answer_BxL,
                                axis_name) if classifier else jnp.zeros(()))
    scale = jnp.ones(())
  else:
    logits_BxLxV, final = recurrence.forward(cfg, params, batch["inputs"], mode="scan")
    ce = ce_of(logits_BxLxV)
    penalised_BxL = answer_BxL if h.penalty_tokens == "answer" else batch["inputs"] != PAD
    if adaptive:
      pen_BxL = halting.penalty(h.penalty, final.weights_BxLxK, final.logits_BxLxK,
                                final.depth_BxL, h)
      pen = jnp.sum(pen_BxL * penalised_BxL) / _mean_count(penalised_BxL, axis_name)
    else:
      pen = jnp.zeros(())
    scale = halting.penalty_scale(step, h.penalty_weight, h.penalty_warmup, h.penalty_ramp)
  correct_BxL = (jnp.argmax(logits_BxLxV, -1) == batch["targets"]) & answer_BxL
  loss = ce + scale * pen
  means = {"loss": loss, "ce": ce, "penalty": pen, "penalty_scale": scale}
  sums = {"answer_tokens": jnp.sum(answer_BxL.astype(jnp.float32)),
          "correct": jnp.sum(correct_BxL.astype(jnp.float32)),
          **depth_stats(final.depth_BxL, final.probs_BxLxK, answer_BxL)}
  return loss, {"mean": means, "sum": sums}
