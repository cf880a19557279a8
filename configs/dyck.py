"""Shortest completion of Dyck-2 prefixes; train prefix lengths 2..16, eval to 32.

python -m anira_jax.main --config=configs/dyck.py[:anira_o|anira_e|fixed|transformer]
"""
from anira_jax import config


def get_config(variant: str = "anira_o"):
  c = config.default("dyck", variant or "anira_o")
  c.task.options.k = 2
  c.task.options.max_depth = 16
  c.task.train_sizes = (2, 16)
  c.task.eval_sizes = (4, 8, 12, 16, 24, 32)
  return c
