"""Halting ablation: which remedy makes per-token depth follow difficulty, measured.

python -m anira_jax.ablation --out=docs/halting.md [--tasks=sorting,graph]
    [--variants=anira_o,anira_e] [--seeds=0,1,2] [--remedies=...] [--set=train.steps=800]
    [--workdir=runs/ablation]

Trains every (task, variant, remedy, seed) cell with `train_and_evaluate` in its own run directory
(cells already finished are reused, so an interrupted ablation resumes), then writes the table of
mean +- std over seeds of in-distribution sequence accuracy, mean depth, depth standard deviation
over in-distribution answer tokens, and Spearman(depth, the task's main execution feature) on
them. The rule that picks the default is stated in the output, above the table.
"""
import json
import os

from absl import flags
import ml_collections
import numpy as np

from anira_jax import analysis, cli, evaluate, tasks, train

# Each remedy is a set of halting.* overrides on top of the config file.
REMEDIES: dict[str, dict] = {
    "plain_ponder": {"bias_init": 0.0},
    "deep_start": {"bias_init": -3.0},
    "warmup": {"bias_init": 0.0, "penalty_warmup": 300, "penalty_ramp": 300},
    "kl_geometric": {"bias_init": 0.0, "penalty": "kl_geometric", "prior_lambda": 0.3},
    "kl_uniform": {"bias_init": 0.0, "penalty": "kl_uniform"},
    "distribution": {"bias_init": 0.0, "output": "distribution"},
    "deep_warmup_distribution": {"bias_init": -3.0, "penalty_warmup": 300, "penalty_ramp": 300,
                                 "output": "distribution"},
}
RULE = ("For each task and variant, the settings whose mean in-distribution sequence accuracy is "
        "within 0.05 of the best setting's are eligible; among them the highest mean Spearman "
        "correlation wins. The default is the remedy with the highest mean Spearman over the "
        "task/variant pairs among those eligible in every pair.")
ACCURACY_MARGIN = 0.05


def config_for(task: str, variant: str, remedy: str, seed: int,
               overrides: list[str]) -> ml_collections.ConfigDict:
  cfg = cli.load_config_file(f"configs/{task}.py", variant)
  cfg.seed = seed
  for key, value in REMEDIES[remedy].items():
    cfg.halting[key] = value
  for item in overrides:
    key, _, value = item.partition("=")
    cli.override(cfg, key, value)
  return cfg


def cell_metrics(records: dict[str, np.ndarray], result: dict, main_feature: str) -> dict:
  """The ablation's four numbers for one trained run."""
  inside = analysis.select(records, records["in_distribution"])
  depth = inside["depth"].astype(np.float64)
  sizes = [m for m in result["sizes"].values() if m["in_distribution"]]
  return {"sequence_accuracy": float(np.mean([m["sequence_accuracy"] for m in sizes])),
          "mean_depth": float(depth.mean()), "depth_std": float(depth.std()),
          "spearman": analysis.spearman(depth, inside[f"feature/{main_feature}"])}


def run_cell(task: str, variant: str, remedy: str, seed: int, overrides: list[str],
             root: str) -> dict:
  workdir = os.path.join(root, task, variant, remedy, f"seed{seed}")
  done = os.path.join(workdir, "cell.json")
  if os.path.exists(done):
    with open(done) as f:
      return json.load(f)
  cfg = config_for(task, variant, remedy, seed, overrides)
  os.makedirs(workdir, exist_ok=True)
  result = train.train_and_evaluate(cfg, workdir)
  metrics = cell_metrics(evaluate.load_records(workdir), result,
                         tasks.get(cfg.task.name, **cfg.task.options).main_feature)
  cell = {"task": task, "variant": variant, "remedy": remedy, "seed": seed, **metrics}
  with open(done, "w") as f:
    json.dump(cell, f)
  return cell


def aggregate(cells: list[dict]) -> dict:
  """(task, variant, remedy) -> metric -> (mean, std) over seeds."""
  groups: dict[tuple, list[dict]] = {}
  for c in cells:
    groups.setdefault((c["task"], c["variant"], c["remedy"]), []).append(c)
  keys = ("sequence_accuracy", "mean_depth", "depth_std", "spearman")
  return {g: {k: (float(np.mean([c[k] for c in cs])), float(np.std([c[k] for c in cs])))
              for k in keys} for g, cs in groups.items()}


def choose_default(table: dict) -> str | None:
  """Applies RULE."""
  pairs = sorted({(t, v) for t, v, _ in table})
  remedies = sorted({r for _, _, r in table})
  eligible = set(remedies)
  for t, v in pairs:
    best = max(table[(t, v, r)]["sequence_accuracy"][0] for r in remedies if (t, v, r) in table)
    eligible &= {r for r in remedies if (t, v, r) in table
                 and table[(t, v, r)]["sequence_accuracy"][0] >= best - ACCURACY_MARGIN}
  if not eligible:
    return None
  return max(sorted(eligible), key=lambda r: np.mean([table[(t, v, r)]["spearman"][0]
                                                      for t, v in pairs]))


def markdown(table: dict, command: str, overrides: list[str], seeds: list[int]) -> str:
  default = choose_default(table)
  fmt = lambda mv: f"{mv[0]:.3f} ± {mv[1]:.3f}"
  lines = [
      "# Halting ablation", "",
      f"Generated by `{command}` (the table below is this command's output; rerun it to "
      "reproduce). Each cell trains the task's config with the remedy's `halting.*` overrides"
      f"{' and ' + ', '.join(overrides) if overrides else ''}, seeds {seeds}; numbers are "
      "mean ± std over seeds, on in-distribution answer tokens of the evaluation sets.", "",
      "## Remedies", ""]
  lines += [f"- `{r}`: " + ", ".join(f"`halting.{k}={v}`" for k, v in o.items())
            for r, o in REMEDIES.items()]
  lines += ["", "## Rule for the default (fixed before the table was filled)", "", RULE, "",
            f"**Chosen: `{default}`.**" if default else "**No remedy is eligible in every pair.**",
            "", "## Results", "",
            "| task | variant | remedy | seq acc (in-dist) | mean depth | depth std | "
            "Spearman(depth, main feature) |", "| --- | --- | --- | --- | --- | --- | --- |"]
  for (t, v, r), m in sorted(table.items()):
    lines.append(f"| {t} | {v} | {r} | {fmt(m['sequence_accuracy'])} | {fmt(m['mean_depth'])} | "
                 f"{fmt(m['depth_std'])} | {fmt(m['spearman'])} |")
  return "\n".join(lines) + "\n"


def main(argv: list[str]) -> None:
  del argv
  unknown = set(_REMEDIES.value) - set(REMEDIES)
  if unknown:
    raise cli.UserError(f"unknown remedies {sorted(unknown)}; valid: {', '.join(REMEDIES)}")
  seeds = [int(s) for s in _SEEDS.value]
  cells = [run_cell(t, v, r, s, _SET.value, _WORKDIR.value)
           for t in _TASKS.value for v in _VARIANTS.value for r in _REMEDIES.value for s in seeds]
  command = "python -m anira_jax.ablation " + " ".join(
      f"--{name}={','.join(map(str, flag.value)) if isinstance(flag.value, list) else flag.value}"
      for name, flag in (("out", _OUT), ("tasks", _TASKS), ("variants", _VARIANTS),
                         ("seeds", _SEEDS), ("remedies", _REMEDIES)))
  command += "".join(f" --set={s}" for s in _SET.value)
  with open(_OUT.value, "w") as f:
    f.write(markdown(aggregate(cells), command, _SET.value, seeds))
  print(_OUT.value)


if __name__ == "__main__":
  _OUT = flags.DEFINE_string("out", "docs/halting.md", "Markdown file to write.")
  _TASKS = flags.DEFINE_list("tasks", ["sorting", "graph"], "Task configs (configs/<task>.py).")
  _VARIANTS = flags.DEFINE_list("variants", ["anira_o", "anira_e"], "Variants.")
  _SEEDS = flags.DEFINE_list("seeds", ["0", "1", "2"], "Seeds.")
  _REMEDIES = flags.DEFINE_list("remedies", list(REMEDIES), "Remedies to train.")
  _SET = flags.DEFINE_multi_string("set", [], "Extra overrides key=value, e.g. train.steps=800.")
  _WORKDIR = flags.DEFINE_string("workdir", "runs/ablation", "Root of the cells' run dirs.")
  cli.run(main)
