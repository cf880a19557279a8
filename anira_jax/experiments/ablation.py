"""Halting ablation: which remedy makes per-token depth follow difficulty, measured.

python -m anira_jax.ablation --out=docs/halting.md [--tasks=sorting,graph]
    [--variants=anira_o,anira_e] [--seeds=0,1,2] [--remedies=...] [--set=train.steps=800]
    [--full_length_seeds=0] [--workdir=runs/ablation]

Trains every (task, variant, remedy, seed) cell with `train_and_evaluate` in its own run directory
(cells already finished are reused, so an interrupted ablation resumes), then writes the table of
mean +- std over seeds of in-distribution sequence accuracy, mean depth, depth standard deviation
over in-distribution answer tokens, and Spearman(depth, the task's main execution feature) on
them. RULE ranks the remedies on that table; GUARD then trains them in that order at the config
files' own length (no --set overrides) until one keeps depth spread in every pair: that remedy is
the default (config.HALTING_DEFAULT names it). Both are stated in the output, above the tables.
The remedies are config.HALTING_REMEDIES plus one per registered halting penalty (`remedies`).
"""
from collections.abc import Callable
import json
import os

from absl import flags
import numpy as np

from anira_jax import cli, config, errors, evaluate, halting, stats, tasks
from anira_jax.experiments import runner

FLAGS = flags.FLAGS   # defined by the command line, anira_jax/ablation.py

RULE = ("For each task and variant, the settings whose mean in-distribution sequence accuracy is "
        "within 0.05 of the best setting's are eligible; among them the highest mean Spearman "
        "correlation wins. The default is the remedy with the highest mean Spearman over the "
        "task/variant pairs among those eligible in every pair.")
ACCURACY_MARGIN = 0.05
GUARD = ("Added after the first table was filled, because the rule alone picked `kl_uniform`, which "
         "at the configs' full length runs every token to K_max: the remedies are trained in the "
         "rule's order at the config files' own length (no --set overrides) until one keeps a depth "
         "standard deviation over in-distribution answer tokens of at least {min_std} iterations "
         "(mean over the full-length seeds) in every task/variant pair. That remedy is the default "
         "of every config.")
MIN_DEPTH_STD = 0.5
REFERENCE = "plain_ponder"    # also trained at full length: the accuracy the default must keep


def remedies() -> dict[str, dict]:
  """Remedy name -> the halting.* fields it changes from config.HALTING_PLAIN: the configured
  remedies, then one per registered penalty that none of them uses, named after the penalty."""
  named = config.HALTING_REMEDIES
  used = {{**config.HALTING_PLAIN, **change}["penalty"] for change in named.values()}
  return {**named, **{p: {"penalty": p} for p in halting.PENALTIES
                      if p not in used and p not in named}}


def remedy_overrides(remedy: str) -> list[str]:
  """config.HALTING_PLAIN updated by the remedy, as `halting.key=value` overrides (every field, so
  a cell's config does not depend on the config files' halting default)."""
  return [f"halting.{key}={value!r}"
          for key, value in {**config.HALTING_PLAIN, **remedies()[remedy]}.items()]


def cell_metrics(records: dict[str, np.ndarray], result: dict, task: tasks.Task) -> dict:
  """The ablation's four numbers for one trained run, plus Spearman(depth, each other execution
  feature) under "other_spearman"."""
  inside = stats.select(records, records["in_distribution"])
  depth = inside["depth"].astype(np.float64)
  rho = {name: stats.spearman(depth, inside[f"feature/{name}"])
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
  cfg = runner.config_for(task, variant, seed, remedy_overrides(remedy) + overrides)
  result = runner.train_unless_done(cfg, workdir)
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


def rank(table: dict) -> list[str]:
  """Applies RULE: the remedies eligible in every pair, best first."""
  pairs = sorted({(t, v) for t, v, _ in table})
  remedies = sorted({r for _, _, r in table})
  eligible = set(remedies)
  for t, v in pairs:
    best = max(table[(t, v, r)]["sequence_accuracy"][0] for r in remedies if (t, v, r) in table)
    eligible &= {r for r in remedies if (t, v, r) in table
                 and table[(t, v, r)]["sequence_accuracy"][0] >= best - ACCURACY_MARGIN}
  return sorted(sorted(eligible), key=lambda r: -np.mean([table[(t, v, r)]["spearman"][0]
                                                          for t, v in pairs]))


def passes_guard(full: dict, remedy: str) -> bool:
  """GUARD for one remedy, on the aggregated full-length cells."""
  return all(m["depth_std"][0] >= MIN_DEPTH_STD for (_, _, r), m in full.items() if r == remedy)


def confirm(ranked: list[str], train_cells: Callable[[str], list[dict]]
            ) -> tuple[str | None, dict]:
  """Applies GUARD: trains `train_cells(remedy)` (the remedy's full-length cells) in the order of
  `ranked` up to the first remedy that passes. Returns it (None if none does) and the aggregated
  full-length cells of every remedy tried."""
  full: dict = {}
  for remedy in ranked:
    full.update(aggregate(train_cells(remedy)))
    if passes_guard(full, remedy):
      return remedy, full
  return None, full


def rows(table: dict, keys: list[tuple]) -> list[str]:
  """Markdown header and one row per (task, variant, remedy) key of an aggregated table."""
  fmt = lambda mv: f"{mv[0]:.3f} ± {mv[1]:.3f}"
  lines = ["| task | variant | remedy | seq acc (in-dist) | mean depth | depth std | "
           "Spearman(depth, main feature) | Spearman, other execution features (mean) |",
           "| --- | --- | --- | --- | --- | --- | --- | --- |"]
  for t, v, r in keys:
    m = table[(t, v, r)]
    others = ", ".join(f"{f} {rho:+.2f}" for f, rho in m["other_spearman"].items())
    lines.append(f"| {t} | {v} | {r} | {fmt(m['sequence_accuracy'])} | {fmt(m['mean_depth'])} | "
                 f"{fmt(m['depth_std'])} | {fmt(m['spearman'])} | {others} |")
  return lines


def markdown(table: dict, full: dict, reference: dict, default: str | None, command: str,
             overrides: list[str], seeds: list[int], full_seeds: list[int]) -> str:
  """The report: `full` holds the guard's full-length cells, in the order tried, and `reference`
  the REFERENCE remedy's."""
  ranked = rank(table)
  lines = [
      "# Halting ablation", "",
      f"Generated by `{command}` (the tables below are this command's output; rerun it to "
      "reproduce). Each cell of the first table trains the task's config with the remedy's "
      f"`halting.*` overrides{' and ' + ', '.join(overrides) if overrides else ''}, seeds "
      f"{seeds}; the full-length check trains the config files' own length, seeds {full_seeds}. "
      "Numbers are mean ± std over seeds, on in-distribution answer tokens of the evaluation "
      "sets. Main execution feature: " + ", ".join(
          f"{t} `{tasks.get(t).main_feature}`" for t in sorted({t for t, _, _ in table})) + ".",
      "", "## Remedies", ""]
  lines += ["Every remedy starts from " + ", ".join(
      f"`halting.{k}={v!r}`" for k, v in config.HALTING_PLAIN.items()) + " and changes:", ""]
  lines += [f"- `{r}`: " + (", ".join(f"`halting.{k}={v!r}`" for k, v in o.items()) or "nothing")
            for r, o in remedies().items()]
  lines += ["", "## Rule for the default", "", "Ranking (fixed before the table was filled): " + RULE,
            "", "Order by this rule: " + (", ".join(f"`{r}`" for r in ranked) or "none eligible")
            + ".", "", "Full-length guard: " + GUARD.format(min_std=MIN_DEPTH_STD), "",
            f"**Default: `{default}`.**" if default else "**No remedy passes the guard.**",
            "", f"## Results ({', '.join(overrides) or 'full length'})", ""]
  lines += rows(table, sorted(table))
  tried = list(dict.fromkeys(r for _, _, r in full))
  lines += ["", "## Full-length check, in the rule's order", "",
            "Remedies tried: " + ", ".join(
                f"`{r}` ({'passes' if passes_guard(full, r) else 'fails'})" for r in tried)
            + f"; then `{REFERENCE}`, for the accuracy it reaches at the same length.", ""]
  order = tried + [REFERENCE]
  both = {**full, **reference}
  lines += rows(both, sorted(both, key=lambda k: (order.index(k[2]), k[0], k[1])))
  return "\n".join(lines) + "\n"


def main(argv: list[str]) -> None:
  del argv
  if os.path.isdir(FLAGS.out) or not os.path.isdir(os.path.dirname(FLAGS.out) or "."):
    raise errors.UserError(f"--out={FLAGS.out} must be a file in an existing directory (checked "
                           "before training, since the report is written last)")
  unknown = set(FLAGS.remedies) - set(remedies())
  if unknown:
    raise errors.UserError(f"unknown remedies {sorted(unknown)}; valid: {', '.join(remedies())}")
  seeds = cli.seeds(FLAGS.seeds)
  full_seeds = cli.seeds(FLAGS.full_length_seeds, "full_length_seeds")
  pairs = [(t, v) for t in FLAGS.tasks for v in FLAGS.variants]
  table = aggregate([run_cell(t, v, r, s, FLAGS.set, FLAGS.workdir)
                     for t, v in pairs for r in FLAGS.remedies for s in seeds])
  full_root = os.path.join(FLAGS.workdir, "full_length")
  full_cells = lambda r: [run_cell(t, v, r, s, [], full_root) for t, v in pairs for s in full_seeds]
  default, full = confirm(rank(table), full_cells)
  reference = aggregate(full_cells(REFERENCE))
  command = "python -m anira_jax.ablation " + " ".join(
      f"--{name}={','.join(map(str, flag.value)) if isinstance(flag.value, list) else flag.value}"
      for name, flag in ((n, FLAGS[n]) for n in ("out", "tasks", "variants", "seeds", "remedies",
                                                   "full_length_seeds")))
  command += "".join(f" --set={s}" for s in FLAGS.set)
  with open(FLAGS.out, "w") as f:
    f.write(markdown(table, full, reference, default, command, FLAGS.set, seeds, full_seeds))
  print(FLAGS.out)
