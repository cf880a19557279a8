"""AdamW with warm-up, cosine decay and clipping; the train state it updates."""
import jax
import jax.numpy as jnp
import ml_collections
import optax

from anira_jax import model, tasks

DECAYED = ("kernel", "embedding")   # weight decay on matrices only: no biases, norms or offsets


def decay_mask(params: model.Params) -> model.Params:
  """True for the leaves weight decay applies to (by parameter name)."""
  return jax.tree_util.tree_map_with_path(lambda path, _: path[-1].key in DECAYED, params)


def _unit(params: model.Params) -> dict:
  """"halt" for the halting unit's leaves, "rest" for all others."""
  return {k: jax.tree.map(lambda _, k=k: "halt" if k == "halt" else "rest", v)
          for k, v in params.items()}


def make(cfg: ml_collections.ConfigDict) -> optax.GradientTransformation:
  """AdamW of config.train. The halting unit has Adam moments of its own that start when the unit
  is switched on (after halting.depth_warmup steps), so its first updates have the size of any
  first Adam update rather than that of moments bias-corrected for steps it never saw."""
  t = cfg.train
  horizon = t.schedule_steps or t.steps   # train.schedule_steps, resolved on resume (train.py)
  schedule = optax.warmup_cosine_decay_schedule(
      0.0, t.learning_rate, t.warmup_steps, max(horizon, t.warmup_steps + 1),
      end_value=0.1 * t.learning_rate)
  warmup = cfg.halting.depth_warmup
  halt_adam = optax.conditionally_mask(optax.scale_by_adam(), lambda count: count >= warmup)
  return optax.chain(optax.clip_by_global_norm(t.grad_clip),
                     optax.multi_transform({"rest": optax.scale_by_adam(), "halt": halt_adam},
                                           _unit),
                     optax.add_decayed_weights(t.weight_decay, mask=decay_mask),
                     optax.scale_by_learning_rate(schedule))


def init_state(cfg: ml_collections.ConfigDict, task: tasks.Task) -> dict:
  """{"step", "params", "opt_state"} at step 0, a pure function of cfg.seed."""
  params = model.init_params(cfg.model, task.vocab_size, jax.random.key(cfg.seed),
                             cfg.halting.bias_init, cfg.halting.input_norm)
  return {"step": jnp.zeros((), jnp.int32), "params": params,
          "opt_state": make(cfg).init(params)}
