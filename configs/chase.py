"""Pointer chasing: one query into 2 chains of n variables; train n in [2, 6], evaluate to 16.

Chains of n variables reach ceil(n / 2) - 1 hops: up to 2 in training, 7 at n = 16.
Not learned at this budget on the CPU (sequence accuracy 0.5, chance): docs/design.md, "A task
whose tokens need serial steps".
python -m anira_jax.main --config=configs/chase.py[:anira_o|anira_e|fixed|transformer]
"""
from anira_jax import config


def get_config(variant: str = "anira_o"):
  c = config.default("chase", variant or "anira_o")
  c.task.options.num_vars = 24
  c.task.options.num_values = 8
  c.task.options.num_chains = 2
  c.task.train_sizes = (2, 6)
  c.task.eval_sizes = (2, 4, 6, 8, 12, 16)
  c.model.max_len = 40
  c.train.steps = 4000
  c.train.eval_every = 4000
  return c
