"""Pointer chasing through n variable assignments; train n in [2, 8], evaluate up to 16.

python -m anira_jax.main --config=configs/chase.py[:anira_o|anira_e|fixed|transformer]
"""
from anira_jax import config


def get_config(variant: str = "anira_o"):
  c = config.default("chase", variant or "anira_o")
  c.task.options.num_vars = 16
  c.task.options.num_values = 8
  c.task.options.const_prob = 0.2
  c.task.train_sizes = (2, 8)
  c.task.eval_sizes = (2, 4, 6, 8, 12, 16)
  c.model.max_len = 72
  return c
