"""Step-by-step evaluation of bracketed arithmetic mod 5 with + and -; train 1..4 operators,
evaluate to 8.

python -m anira_jax.main --config=configs/modarith.py[:anira_o|anira_e|fixed|transformer]

With modulus 7, all of "+-*" and sizes 1..6, anira_o reached only 0.55 sequence accuracy at one
size after 1500 steps (README table); this smaller language and 4000 steps are learned. No
prelude: a fixed-depth model with 1 iteration reaches 0.44 in-distribution sequence accuracy, with
8 iterations 0.81 (docs/design.md, "Configurations where iterations matter").
"""
from anira_jax import config


def get_config(variant: str = "anira_o"):
  c = config.default("modarith", variant or "anira_o")
  c.task.options.modulus = 5
  c.task.options.ops = "+-"
  c.task.train_sizes = (1, 4)
  c.task.eval_sizes = (1, 2, 3, 4, 6, 8)
  c.model.prelude_layers = 0   # iterations are the only computation (docs/design.md)
  c.train.steps = 4000
  return c
