"""Step-by-step evaluation of bracketed arithmetic mod 7; train 1..6 operators, eval to 12.

python -m anira_jax.main --config=configs/modarith.py[:anira_o|anira_e|fixed|transformer]
"""
from anira_jax import config


def get_config(variant: str = "anira_o"):
  c = config.default("modarith", variant or "anira_o")
  c.task.options.modulus = 7
  c.task.options.ops = "+-*"
  c.task.train_sizes = (1, 6)
  c.task.eval_sizes = (2, 4, 6, 8, 10, 12)
  return c
