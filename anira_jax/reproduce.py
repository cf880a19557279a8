"""python -m anira_jax.reproduce --scale=ci|cpu --out=DIR: the command line of the reproduction
(anira_jax/experiments/reproduce.py)."""
from absl import flags

from anira_jax import cli
from anira_jax.experiments import reproduce

if __name__ == "__main__":
  flags.DEFINE_enum("scale", None, list(reproduce.SCALES), "ci: tiny smoke run; cpu: the "
                    "reproduction on 2 CPU cores.", required=True)
  flags.DEFINE_string("out", None, "Output directory.", required=True)
  cli.run(reproduce.main)
