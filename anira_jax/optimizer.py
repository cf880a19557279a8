"""AdamW with warm-up, cosine decay and clipping; the train state it updates."""
import jax
import jax.numpy as jnp
import ml_collections
import optax

from anira_jax import model, tasks


def make(t: ml_collections.ConfigDict) -> optax.GradientTransformation:
  """The optimizer of config.train."""
  schedule = optax.warmup_cosine_decay_schedule(
      0.0, t.learning_rate, t.warmup_steps, max(t.steps, t.warmup_steps + 1),
      end_value=0.1 * t.learning_rate)
  return optax.chain(optax.clip_by_global_norm(t.grad_clip),
                     optax.adamw(schedule, weight_decay=t.weight_decay))


def init_state(cfg: ml_collections.ConfigDict, task: tasks.Task) -> dict:
  """{"step", "params", "opt_state"} at step 0, a pure function of cfg.seed."""
  params = model.init_params(cfg.model, task.vocab_size, jax.random.key(cfg.seed),
                             cfg.halting.bias_init)
  return {"step": jnp.zeros((), jnp.int32), "params": params,
          "opt_state": make(cfg.train).init(params)}
