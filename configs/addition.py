"""Addition of two n-digit numbers, most significant digit first; train n 1..6, eval to 12.

python -m anira_jax.main --config=configs/addition.py[:anira_o|anira_e|fixed|transformer]
"""
from anira_jax import config


def get_config(variant: str = "anira_o"):
  c = config.default("addition", variant or "anira_o")
  c.task.options.lsb_first = False
  c.task.train_sizes = (1, 6)
  c.task.eval_sizes = (2, 4, 6, 8, 10, 12)
  return c
