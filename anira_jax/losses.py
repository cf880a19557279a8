"""Training objective: next-token cross-entropy on answer tokens plus the compute penalty.

Every term is a per-device sum divided by the mean count over devices, so averaging the per-device
values (lax.pmean) gives exactly the global mean, however unevenly answer tokens fall on devices.
"""
import chex
import jax
import jax.numpy as jnp
import ml_collections

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


def objective(cfg: ml_collections.ConfigDict, params: model.Params, batch: dict, step: jax.Array,
              axis_name: str | None = None) -> tuple[jax.Array, dict]:
  """(per-device loss, {"mean": per-device terms to pmean, "sum": per-device sums to psum})."""
  chex.assert_equal_shape([batch["inputs"], batch["targets"], batch["loss_mask"]])
  params = halting.at_step(params, step, cfg.halting.depth_warmup)
  logits_BxLxV, final = recurrence.forward(cfg, params, batch["inputs"], mode="scan")
  answer_BxL = batch["loss_mask"]
  penalised_BxL = answer_BxL if cfg.halting.penalty_tokens == "answer" else batch["inputs"] != PAD
  ce_BxL = -jnp.take_along_axis(jax.nn.log_softmax(logits_BxLxV),
                                batch["targets"][..., None], axis=-1)[..., 0]
  ce = jnp.sum(ce_BxL * answer_BxL) / _mean_count(answer_BxL, axis_name)
  h = cfg.halting
  if model.variant(cfg.model).adaptive:
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
