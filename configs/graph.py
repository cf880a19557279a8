"""Topological order (Kahn, smallest index first) of random DAGs; train 4..8 nodes, eval to 12.

No prelude: the shared block is the only computation, so iterations are what the model has
(docs/design.md, "Configurations where iterations matter": a fixed-depth model with 1 iteration
reaches 0.49 in-distribution sequence accuracy, with 8 iterations 0.84).

python -m anira_jax.main --config=configs/graph.py[:anira_o|anira_e|fixed|transformer]
"""
from anira_jax import config


def get_config(variant: str = "anira_o"):
  c = config.default("graph", variant or "anira_o")
  c.task.options.max_nodes = 16
  c.task.options.edge_prob = 0.3
  c.task.options.max_in_degree = 3
  c.task.train_sizes = (4, 8)
  c.task.eval_sizes = (4, 6, 8, 10, 12)
  c.model.prelude_layers = 0
  c.model.max_len = 112
  return c
