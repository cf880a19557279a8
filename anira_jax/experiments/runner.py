"""Many runs of the config files: one config per (task, variant, seed, overrides), each trained in
its own directory unless it already finished there (so an interrupted sweep resumes)."""
from collections.abc import Sequence
import json
import os

import ml_collections

from anira_jax import cli, config as config_lib, errors, runs, train


def config_for(task: str, variant: str, seed: int,
               overrides: Sequence[str] = ()) -> ml_collections.ConfigDict:
  """The repository's configs/<task>.py:variant with the seed, then `key=value` overrides as
  --config.key=value."""
  cfg = cli.load_config_file(cli.config_path(task), variant)
  cfg.seed = seed
  for item in overrides:
    key, _, value = item.partition("=")
    cli.override(cfg, key, value)
  return cfg


def finished_eval(workdir: str, steps: int) -> dict | None:
  """eval.json of workdir if it is the final evaluation of a `steps`-step run, else None."""
  path = os.path.join(workdir, "eval.json")
  if not (os.path.isfile(path) and os.path.isfile(os.path.join(workdir, "tokens.npz"))):
    return None
  try:
    with open(path) as f:
      result = json.load(f)
  except (OSError, ValueError):   # unreadable: training then finds the run finished, rewrites it
    return None
  return result if isinstance(result, dict) and result.get("step") == steps else None


def train_unless_done(cfg: ml_collections.ConfigDict, workdir: str) -> dict:
  """eval.json of the finished run of cfg in workdir, training or resuming it first if needed."""
  if os.path.isfile(os.path.join(workdir, "config.json")):
    _, changed = config_lib.resume(runs.load_config(workdir), cfg)
    if changed:
      raise errors.UserError(f"{workdir} holds a run of another config (it differs in "
                             f"{', '.join(key for key, _, _ in changed)}); remove it or choose "
                             "another output directory")
  result = finished_eval(workdir, cfg.train.steps)
  if result is None:
    os.makedirs(workdir, exist_ok=True)
    if not train.train_and_evaluate(cfg, workdir):
      raise errors.Stopped(f"training in {workdir} was stopped; rerun the same command to resume")
    result = finished_eval(workdir, cfg.train.steps)
  return result
