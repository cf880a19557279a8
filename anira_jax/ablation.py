"""python -m anira_jax.ablation [--out=docs/halting.md ...]: the command line of the halting
ablation (anira_jax/experiments/ablation.py)."""
from absl import flags

from anira_jax import cli
from anira_jax.experiments import ablation

if __name__ == "__main__":
  flags.DEFINE_string("out", "docs/halting.md", "Markdown file to write.")
  flags.DEFINE_list("tasks", ["sorting", "graph"], "Task configs (configs/<task>.py).")
  flags.DEFINE_list("variants", ["anira_o", "anira_e"], "Variants.")
  flags.DEFINE_list("seeds", ["0", "1", "2"], "Seeds.")
  flags.DEFINE_list("remedies", list(ablation.remedies()), "Remedies to train.")
  flags.DEFINE_list("full_length_seeds", ["0"], "Seeds of the full-length guard's runs.")
  flags.DEFINE_multi_string("set", [], "Extra overrides key=value, e.g. train.steps=800.")
  flags.DEFINE_string("workdir", "runs/ablation", "Root of the cells' run dirs.")
  cli.run(ablation.main)
