"""Sorting n integers from 16 values; train n in [2, 8], evaluate up to 16.

python -m anira_jax.main --config=configs/sorting.py[:anira_o|anira_e|fixed|transformer]
"""
from anira_jax import config


def get_config(variant: str = "anira_o"):
  c = config.default("sorting", variant or "anira_o")
  c.task.options.num_values = 16
  c.task.train_sizes = (2, 8)
  c.task.eval_sizes = (2, 4, 6, 8, 12, 16)
  return c
