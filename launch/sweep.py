"""Sweeps configs x variants x seeds: one training run each, here one after another or on SLURM.

python launch/sweep.py --configs=configs/sorting.py,configs/dyck.py --variants=anira_o,anira_e
    --seeds=0,1,2 [--root=runs/sweep] [--submit=local|sbatch] [--dry_run] [-- EXTRA_ARGS...]

Each run is `python -m anira_jax.main --config=<config>:<variant> --config.seed=<seed>
--workdir=<root>/<config stem>_<variant>_seed<seed> EXTRA_ARGS...` (e.g. `--
--config.train.steps=3000`). --submit=local (default) runs them in this order on this machine and
stops at the first failure with its exit status (run the same sweep again to resume: finished runs
only re-evaluate, interrupted ones resume from their checkpoints); --submit=sbatch submits each as
a job of launch/slurm_gpu.sbatch (its #SBATCH resources apply; add --sbatch_args="..." to change
them). --dry_run prints the commands, one per line, shell-quoted, and runs nothing.
"""
import itertools
import os
import shlex
import subprocess
import sys

from absl import flags

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
from anira_jax import cli  # pylint: disable=wrong-import-position

_CONFIGS = flags.DEFINE_list("configs", ["configs/sorting.py"], "Config files.")
_VARIANTS = flags.DEFINE_list("variants", ["anira_o"], "Variants of each config.")
_SEEDS = flags.DEFINE_list("seeds", ["0"], "Seeds (config.seed) of each config and variant.")
_ROOT = flags.DEFINE_string("root", "runs/sweep", "Directory holding one workdir per run.")
_SUBMIT = flags.DEFINE_enum("submit", "local", ["local", "sbatch"],
                            "Run here, in order, or submit each run with sbatch.")
_SBATCH_ARGS = flags.DEFINE_string("sbatch_args", "", "Extra sbatch options, e.g. '--nodes=4'.")
_PYTHON = flags.DEFINE_string("python", sys.executable, "Interpreter of --submit=local runs.")
_DRY_RUN = flags.DEFINE_bool("dry_run", False, "Print the commands instead of running them.")

SBATCH_SCRIPT = os.path.join(REPO, "launch", "slurm_gpu.sbatch")


def run_name(config: str, variant: str, seed: int) -> str:
  return f"{cli.file_stem(config)}_{variant}_seed{seed}"


def train_args(config: str, variant: str, seed: int, root: str, extra: list[str]) -> list[str]:
  """The anira_jax.main arguments of one run."""
  return [f"--config={config}:{variant}", f"--config.seed={seed}",
          f"--workdir={os.path.join(root, run_name(config, variant, seed))}", *extra]


def commands(configs: list[str], variants: list[str], seeds: list[int], root: str,
             extra: list[str], submit: str, python: str = "python",
             sbatch_args: str = "") -> list[list[str]]:
  """One command per (config, variant, seed), configs outermost, seeds innermost."""
  out = []
  for config, variant, seed in itertools.product(configs, variants, seeds):
    args = train_args(config, variant, seed, root, extra)
    if submit == "sbatch":
      out.append(["sbatch", f"--job-name={run_name(config, variant, seed)}",
                  *shlex.split(sbatch_args), SBATCH_SCRIPT, *args])
    else:
      out.append([python, "-m", "anira_jax.main", *args])
  return out


def check(configs: list[str], variants: list[str], seeds: list[str]) -> list[int]:
  """The seeds as integers; UserError on a missing config file, a bad variant or seed."""
  parsed = cli.seeds(seeds)
  for config, variant in itertools.product(configs, variants):
    cli.load_config_file(config, variant)   # raises on a missing file or an unknown variant
  return parsed


def main(argv: list[str]) -> None:
  extra = argv[1:]
  seeds = check(_CONFIGS.value, _VARIANTS.value, _SEEDS.value)
  cmds = commands(_CONFIGS.value, _VARIANTS.value, seeds, _ROOT.value, extra, _SUBMIT.value,
                  _PYTHON.value, _SBATCH_ARGS.value)
  for cmd in cmds:
    if _DRY_RUN.value:
      print(shlex.join(cmd))
      continue
    print(f"$ {shlex.join(cmd)}", file=sys.stderr, flush=True)
    status = subprocess.run(cmd, check=False).returncode
    if status:
      sys.exit(status)


if __name__ == "__main__":
  cli.run(main)
