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
import numpy as np

from anira_jax import analysis, cli, evaluate, sweep, tasks

# The plain ACT setting every remedy starts from, stated in full so that a cell's config does not
# change when the config files' halting default does.
PLAIN: dict = {"output": "state", "threshold": 0.01, "temperature": 1.0, "bias_init": 0.0,
               "penalty": "ponder", "penalty_weight": 0.01, "penalty_warmup": 0,
               "penalty_ramp": 0, "prior_lambda": 0.2}
# Each remedy: the halting.* fields it changes from PLAIN.
REMEDIES: dict[str, dict] = {
    "plain_ponder": {},
    "deep_start": {"bias_init": -3.0},
    "warmup": {"penalty_warmup": 300, "penalty_ramp": 300},
    "kl_geometric": {"penalty": "kl_geometric", "prior_lambda": 0.3},
    "kl_uniform": {"penalty": "kl_uniform"},
    "deep_warmup_distribution": {"bias_init": -3.0, "penalty_warmup": 300, "penalty_ramp": 300,
                                 "output": "distribution"},
}
RULE = ("For each task and variant, the settings whose mean in-distribution sequence accuracy is "
        "within 0.05 of the best setting's are eligible; among them the highest mean Spearman "
        "correlation wins. The default is the remedy with the highest mean Spearman over the "
        "task/variant pairs among those eligible in every pair.")
ACCURACY_MARGIN = 0.05


def remedy_overrides(remedy: str) -> list[str]:
  """PLAIN updated by REMEDIES[remedy], as `halting.key=value` overrides."""
  return [f"halting.{key}={value!r}" for key, value in {**PLAIN, **REMEDIES[remedy]}.items()]


def cell_metrics(records: dict[str, np.ndarray], result: dict, task: tasks.Task) -> dict:
  """The ablation's four numbers for one trained run, plus Spearman(depth, each other execution
  feature) under "other_spearman"."""
  inside = analysis.select(records, records["in_distribution"])
  depth = inside["depth"].astype(np.float64)
  rho = {name: analysis.spearman(depth, inside[f"feature/{name}"])
         for name, kind in task.feature_kinds.items() if kind == "execution"}
  inside_mean = evaluate.range_means(result)["in_distribution"]
  return {"sequence_accuracy": inside_mean["sequence_accuracy"],
          "mean_depth": float(depth.mean()), "depth_std": float(depth.std()),
          "spearman": rho.pop(task.main_feature), "other_spearman": rho}


def run_cell(task: str, variant: str, remedy: str, seed: int, overrides: list[str],
             root: str) -> dict:
  workdir = os.path.join(root, task, variant, remedy, f"seed{seed}")
  done = os.path.join(workdir, "cell.json")
  if os.path.exists(done):
    with open(done) as f:
      return json.load(f)
  cfg = sweep.config_for(task, variant, seed, remedy_overrides(remedy) + overrides)
  result = sweep.train_unless_done(cfg, workdir)
  metrics = cell_metrics(evaluate.load_records(workdir), result,
                         tasks.get(cfg.task.name, **cfg.task.options))
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
  return {g: {**{k: (float(np.mean([c[k] for c in cs])), float(np.std([c[k] for c in cs])))
                 for k in keys},
              "other_spearman": {f: float(np.mean([c["other_spearman"][f] for c in cs]))
                                 for f in cs[0]["other_spearman"]}}
          for g, cs in groups.items()}


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
      "mean ± std over seeds, on in-distribution answer tokens of the evaluation sets. Main "
      "execution feature: " + ", ".join(f"{t} `{tasks.get(t).main_feature}`"
                                        for t in sorted({t for t, _, _ in table})) + ".", "",
      "## Remedies", ""]
  lines += ["Every remedy starts from " + ", ".join(f"`halting.{k}={v!r}`" for k, v in PLAIN.items())
            + " and changes:", ""]
  lines += [f"- `{r}`: " + (", ".join(f"`halting.{k}={v!r}`" for k, v in o.items()) or "nothing")
            for r, o in REMEDIES.items()]
  lines += ["", "## Rule for the default (fixed before the table was filled)", "", RULE, "",
            f"**Chosen: `{default}`.**" if default else "**No remedy is eligible in every pair.**",
            "", "## Results", "",
            "| task | variant | remedy | seq acc (in-dist) | mean depth | depth std | "
            "Spearman(depth, main feature) | Spearman, other execution features (mean) |",
            "| --- | --- | --- | --- | --- | --- | --- | --- |"]
  for (t, v, r), m in sorted(table.items()):
    others = ", ".join(f"{f} {rho:+.2f}" for f, rho in m["other_spearman"].items())
    lines.append(f"| {t} | {v} | {r} | {fmt(m['sequence_accuracy'])} | {fmt(m['mean_depth'])} | "
                 f"{fmt(m['depth_std'])} | {fmt(m['spearman'])} | {others} |")
  return "\n".join(lines) + "\n"


def main(argv: list[str]) -> None:
  del argv
  unknown = set(_REMEDIES.value) - set(REMEDIES)
  if unknown:
    raise cli.UserError(f"unknown remedies {sorted(unknown)}; valid: {', '.join(REMEDIES)}")
  seeds = cli.seeds(_SEEDS.value)
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
