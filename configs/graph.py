"""Topological order (Kahn, smallest index first) of random DAGs; train 3..6 nodes, eval to 12.

python -m anira_jax.main --config=configs/graph.py[:anira_o|anira_e|fixed|transformer]
"""
from anira_jax import config


def get_config(variant: str = "anira_o"):
  c = config.default("graph", variant or "anira_o")
  c.task.options.max_nodes = 16
  c.task.options.edge_prob = 0.3
  c.task.options.max_in_degree = 3
  c.task.train_sizes = (3, 6)
  c.task.eval_sizes = (3, 4, 5, 6, 8, 10, 12)
  c.model.max_len = 112
  return c
