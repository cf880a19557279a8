"""Trains and evaluates one configuration.

python -m anira_jax.main --config=configs/sorting.py[:variant] [--config.x.y=v] [--workdir=DIR]
"""
import os

from absl import flags
from ml_collections import config_flags

from anira_jax import cli, parallel, train

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file, e.g. configs/sorting.py.")
_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory (default runs/<config>_<variant>).")


def main(argv: list[str]) -> None:
  del argv
  cfg = _CONFIG.value
  parallel.initialize(cfg.parallel)
  workdir = _WORKDIR.value or os.path.join("runs", f"{cli.config_stem()}_{cfg.model.variant}")
  train.train_and_evaluate(cfg, workdir)
  print(workdir)


if __name__ == "__main__":
  cli.run(main, flags_parser=cli.config_parser(_CONFIG))
