"""Trains and evaluates one configuration.

python -m anira_jax.main --config=configs/sorting.py[:variant] [--config.x.y=v] [--workdir=DIR]

It prints a metrics line every train.log_every steps, then the final evaluation (one line per size,
as `python -m anira_jax.evaluate` prints it) and, last, the workdir.

Exit status: 0 done, 2 bad input (one line on stderr), 75 (EX_TEMPFAIL) stopped by SIGTERM or
Ctrl-C after saving a checkpoint (rerun the same command to resume; launch/slurm_gpu.sbatch
requeues on it), 130 a second Ctrl-C, which exits at once without saving.
"""

from absl import flags
import jax
from ml_collections import config_flags

from anira_jax import cli, errors, parallel, train

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file, e.g. configs/sorting.py.")
_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory (default runs/<config>_<variant>, "
                               "plus _<hash of the --config.* overrides> when there are any).")


def main(argv: list[str]) -> None:
  del argv
  cfg = _CONFIG.value
  parallel.initialize(cfg.parallel)
  workdir = _WORKDIR.value or cli.default_workdir(
      cli.config_stem(), cfg.model.variant, config_flags.get_override_values(flags.FLAGS["config"]))
  result = train.train_and_evaluate(cfg, workdir)
  if not result:
    raise errors.Stopped()   # a signal stopped it after a checkpoint: exit for a requeue
  if jax.process_index() == 0:
    print("\n".join(cli.result_lines(result)))
  print(workdir)


if __name__ == "__main__":
  cli.run(main, flags_parser=cli.config_parser(_CONFIG))
